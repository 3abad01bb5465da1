"""MetaGater's sweep family: which fields its sweep files may vary.

Every per-method field of MetaGater and its baselines is a traced
hyperparameter (a key of ``ServerState.hparams`` or the adaptation step size),
so a method's members differ only in arrays and share one compiled program.
"""

from mg import data as data_lib
from mg.metagater import config as config_lib
from mg.metagater import methods as methods_lib
from mg.sweep.spec import Family


def _metagater_cannot_sweep(config):
  if data_lib.num_validation(config.data) < 1:
    return ('a sweep ranks configurations on validation tasks, never on the targets: '
            'set --config.data.num_validation to 1 or more')
  return None


def _metagater_field(field, config):
  if field.endswith('rho') and config.meta.regularizer == 'none':
    return (f"{field} has no effect with meta.regularizer='none'; sweep it with a "
            'regularizer')
  return None


METAGATER = Family(
    shared=methods_lib.SHARED, settings=methods_lib.settings, validate=config_lib.validate,
    cannot_sweep=_metagater_cannot_sweep,
    refused={'metasnip': "metasnip trains nothing of its own (it adapts metagater_nogate's "
                         'backbone): sweep metagater_nogate instead'},
    check_field=_metagater_field)
# Config fields held as traced arrays, per method (the keys of its
# ``ServerState.hparams`` and its adaptation step size): its own
# ``per_method`` fields, then the shared fields they default to.
TRACED_FIELDS = METAGATER.fields


