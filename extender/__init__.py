"""mig-extender: a kube-scheduler extender that places pods by free NVIDIA MIG slice topology."""

__version__ = "0.1.0"
