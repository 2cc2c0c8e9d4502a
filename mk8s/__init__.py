"""mk8s: carry RKE2 into an air gap as one signed bundle and stand up an HA cluster there."""

__version__ = "0.1.0"
