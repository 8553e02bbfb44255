"""DPO training of adapters: losses, log-probs, pair data, the shared-prompt pass, memory preflight,
export to PEFT, and per-token credit."""
