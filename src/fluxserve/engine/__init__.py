"""The only layer that imports torch and diffusers (lazily, inside the modules that need them)."""
