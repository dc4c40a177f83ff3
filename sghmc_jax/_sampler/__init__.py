"""The sampler's wing: what `sghmc_jax.sample()` runs, one module per concern.

- `fields.py`, `plan.py`: the run plan, `sample()`'s arguments as typed frozen records, checked
  before anything compiles; `placement.py` (the mesh), `batching.py` (the minibatch orders of
  `ORDERS`, host batches);
- `engine.py`: the compiled step, chunk and initial state; `traces.py`: the per-step traces of
  `TRACES`; `cache.py`: the compiled programs' cache; `programs.py`: a run's programs;
- `loop.py`: the chunk loop; `draws.py` and `store.py`: where the draws go (memory, a zarr
  store); `checkpoint.py` and `identity.py`: resumable runs and what identifies one;
  `progress.py`;
- `result.py`: `SampleResult`, `DivergenceError`; `diagnose.py`: `SampleResult.diagnose()`.
"""
