#!/usr/bin/env bash
# The three password-less development wallets pm2/ecosystem.config.js runs (embedded chain only:
# keep such keys away from real funds). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${OMRON_TEE_PM2_DIR:-$HOME/.omron-tee/pm2-net}"
for name in validator miner1 miner2; do
  if [ ! -f "$dir/wallets/$name/hotkeys/default" ]; then
    .venv/bin/omron-tee wallet create --wallet.name "$name" --wallet.hotkey default --wallet.path "$dir/wallets" >/dev/null
  fi
done
echo "wallets in $dir/wallets: validator, miner1, miner2"
