"""Run the rendered state machines on a laptop: moto's ASL engine, local compute, local AWS."""
