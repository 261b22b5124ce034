"""The two-stage Mask²DiT trainer (pretrain → SFT), launched from curation manifests."""
