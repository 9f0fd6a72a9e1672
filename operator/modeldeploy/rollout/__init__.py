"""The canary: analysis verdicts and the rollout state machine, as pure functions over `.status`."""
