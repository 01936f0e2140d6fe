"""The PyTorch AlphaFold2 monomer model, one module per stage."""
