"""`twtrace serve`: task_work metrics for Prometheus."""
