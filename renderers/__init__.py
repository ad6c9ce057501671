"""Built-in renderers, registered through the ``rendergrad`` entry-point group."""
