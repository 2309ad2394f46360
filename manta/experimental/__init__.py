"""Ray's `ray.experimental` pieces that manta provides: `internal_kv`, `tqdm_ray`."""
