"""The real backend: actors on asyncio with TCP, UDP and mutual TLS."""

from .runtime import RealDatagramEndpoint, RealListener, RealRuntime, RealStream

__all__ = ["RealDatagramEndpoint", "RealListener", "RealRuntime", "RealStream"]
