"""KFP v2 components of the amopo pipeline: one module per step, each a thin wrapper that calls the
`amopo` library and passes typed artifacts. No tensor code lives here."""
