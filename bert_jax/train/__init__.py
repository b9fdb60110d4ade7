"""Training: optimizer, state and pure step functions, and the loop around them."""
