"""twtrace's benchmark harness (scripts/bench): runs inside a guest, stdlib only."""
