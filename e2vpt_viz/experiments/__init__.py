"""The experiment platform around the core: run configs, the runner and its CLI, the papers' protocol, reports, the
device-resident data path and several processes.

It depends on the core (:mod:`e2vpt_viz`), never the other way round:

* :mod:`.config` typed run configs (data + backbone + method + training + pruning + output folder), parsed once from
  YAML and ``section.field=value`` overrides;
* :mod:`.run` ``train_run``, ``compare_methods``, ``grid_search``, ``prune_run``;
* :mod:`.cli` ``python -m e2vpt_viz ...``; :mod:`.report` the report files;
* :mod:`.reproduce` the papers' FGVC protocol (grid, pruning, final seeds, table beside the papers' numbers);
* :mod:`.fewshot` PVP pre-training on a source task and the few-shot comparison;
* :mod:`.starter` re-creates the offline starter's backbone;
* :mod:`.device_data` decoded images kept on the training device; :mod:`.distributed` several processes (torchrun).
"""
