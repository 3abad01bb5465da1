"""The one run harness both systems share.

  mg.harness.workdir     one run per workdir (lock), entries of the right kind
  mg.harness.record      the config of record and what a resume may change
  mg.harness.checkpoint  orbax checkpoints, host leaves, SIGINT/SIGTERM as a flag
  mg.harness.session     a run or sweep holding its workdir, from acceptance to its checkpoints
  mg.harness.divergence  when a round's loss says the model diverged
  mg.harness.fields      config field checks, and the run fields every config has
"""
