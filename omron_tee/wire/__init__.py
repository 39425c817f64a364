"""The wire: btauth/1-signed HTTP between neurons (Starlette servers, aiohttp clients)."""
