"""dojo: real-robot learning with a MuJoCo twin. Subpackages follow DESIGN.md's layout."""

__version__ = "0.1.0"
