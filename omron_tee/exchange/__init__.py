"""The one exchange: ``requester`` (sans-I/O: what to send, what was verified), ``transport`` (moving its bytes over HTTP)."""
