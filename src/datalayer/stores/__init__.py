"""Store types, grouped by the category they serve; each config model sits beside its class."""
