"""twtrace: see the kernel's task_work queue."""

__version__ = "0.1.0"
