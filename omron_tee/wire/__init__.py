"""The wire: btauth/1-signed HTTP between neurons (FastAPI servers, httpx clients)."""
