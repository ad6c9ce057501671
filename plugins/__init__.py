"""Built-in estimators and objectives, registered through the ``rendergrad`` entry-point group."""
