"""Hardware-facing side: device interfaces, the safety layer and the gymnasium RobotEnv."""
