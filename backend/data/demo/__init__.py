"""The embedded demo's data: synthetic scenes of coloured shapes, and the `demo-shapes` dataset imported from them
like any upload."""
