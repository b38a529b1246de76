def __getattr__(name):
    def unavailable(*args, **kwargs):
        raise NotImplementedError(f"torchvision.transforms.functional.{name} is not available in the parity shim")

    return unavailable
