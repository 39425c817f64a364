// A whole local network under pm2: the embedded development chain (one SQLite file), a validator
// and two miners with simulated enclaves. From the repository root, after `./run localnet` has
// installed .venv and `pm2/wallets.sh` has made the three password-less development wallets:
//
//     pm2 start pm2/ecosystem.config.js && pm2 logs
//     .venv/bin/omron-tee status --chain.path ~/.omron-tee/pm2-net/chain.sqlite --validator http://127.0.0.1:8092
//     pm2 delete pm2/ecosystem.config.js
//
// A configuration error exits with status 2, which pm2 is told not to restart (stop_exit_codes).
const path = require("path");
const os = require("os");

const root = path.resolve(__dirname, "..");
const python = path.join(root, ".venv", "bin", "python");
const dir = process.env.OMRON_TEE_PM2_DIR || path.join(os.homedir(), ".omron-tee", "pm2-net");
const common = [
  // --chain.create: the first of them to start makes the chain file (a missing file is otherwise an error).
  "--netuid", "1", "--subtensor.network", "embedded", "--chain.path", path.join(dir, "chain.sqlite"), "--chain.create",
  "--wallet.path", path.join(dir, "wallets"), "--wallet.hotkey", "default",
];

function neuron(name, script, args) {
  return {
    name, script: path.join(root, "neurons", script), interpreter: python, args: [...common, ...args],
    cwd: root, kill_timeout: 3000, stop_exit_codes: [2], autorestart: true, max_restarts: 10,
  };
}

module.exports = {
  apps: [
    neuron("omron-validator", "validator.py", ["--wallet.name", "validator", "--validator.api_port", "8092", "--neuron.data_dir", path.join(dir, "validator")]),
    neuron("omron-miner-1", "miner.py", ["--wallet.name", "miner1", "--axon.port", "8101", "--enclave", "simulated", "--zk.off"]),
    neuron("omron-miner-2", "miner.py", ["--wallet.name", "miner2", "--axon.port", "8102", "--enclave", "simulated", "--zk.off"]),
  ],
};
