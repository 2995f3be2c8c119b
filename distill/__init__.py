"""Indirect learning: teachers, labelling at scale, the dataset store (see docs/labelling.md).

Modules (imported on demand, so that importing `distill` stays cheap):

- `teachers`: picklable teacher specs (GAP, any ASE calculator factory, mtpjax MTP), identity;
- `compute`: the worker side — label a chunk of structures with a teacher;
- `executors`: in-process, local spawned worker pool, Dask;
- `engine`: `label(structures, teacher, store, executor)` — resumable, failure-tolerant;
- `store`, `splits`, `export`: the SQLite dataset store, named splits, extxyz / `.cfg` export;
- `inputs`: reading structure files with clear errors; `gap_fit`: the demo GAP teacher;
- `label_cli`: `mtpjax label`; `testing`: cheap and faulty teachers for tests.
"""
