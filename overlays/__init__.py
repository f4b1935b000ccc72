"""Hardware sources: HLS headers of fpgaformer kernels, board wrapper designs, build scripts."""
