"""The actor/learner link: steps stream from actors to the learner, parameter snapshots flow back.

pyzmq over TCP (loopback unless told otherwise), authenticated and encrypted with CurveZMQ keys from files
(`keys`), msgpack headers plus raw numpy buffers, never pickle (`wire`). Each actor journals every step on
its own disk first (`journal`); its `LinkClient` streams what the learner has not acknowledged, and the
learner's `LinkServer` stores each step exactly once and acknowledges it only after its store committed.
"""

from dojo.link.client import LinkClient, LinkStatus
from dojo.link.journal import MemoryJournal, StoreJournal, StoreSink, row_schema
from dojo.link.keys import create_keys
from dojo.link.server import DEFAULT_PORT, LinkServer
from dojo.link.wire import LinkProtocolError, PublishedParams, decode_message, encode_steps

__all__ = ["DEFAULT_PORT", "LinkClient", "LinkProtocolError", "LinkServer", "LinkStatus", "MemoryJournal",
           "PublishedParams", "StoreJournal", "StoreSink", "create_keys", "decode_message", "encode_steps",
           "row_schema"]
