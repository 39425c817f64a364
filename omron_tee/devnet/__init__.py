"""Development scaffolding: processes of the local network that exist only to test it (hostile miners)."""
