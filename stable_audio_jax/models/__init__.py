"""Linen modules: layers, autoencoder, discriminator."""
