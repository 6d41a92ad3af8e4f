"""Store types: one module each, its pydantic config beside its class."""
