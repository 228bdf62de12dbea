"""The job store: one interface (base.JobStore), one backend per deployment shape."""
