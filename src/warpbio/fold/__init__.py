"""AlphaFold2-style protein structure inference: features, model, outputs, rules' steps."""
