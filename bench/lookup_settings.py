"""Settings for bench_segment_lookup.py's gunicorn: the product's settings plus one bare view.

The bare view (a constant JSON answer) runs behind exactly the same middleware and gunicorn
settings as the lookup endpoint, so the ratio between the two is the cost of the lookup itself.
"""

from cdp.settings import *  # noqa: F403

ROOT_URLCONF = "bench.lookup_urls"
