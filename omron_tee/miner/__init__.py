"""The miner: the trusted app (inside the enclave) and the neuron that serves it."""
