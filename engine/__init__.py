"""The ringbook runtime: scheduler, worker threads, shared memory, disk flusher,
journal, feeds and the command line. It imports ``kernels``; never the reverse."""

__version__ = "0.1.0"
