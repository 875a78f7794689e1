"""Scale-out: the executor interface, the Ray executor and its worker actors, and the context-parallel
ranks that make one Wan clip on several GPUs."""
