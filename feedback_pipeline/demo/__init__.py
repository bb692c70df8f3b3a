"""`make demo` and its world: synthetic traces whose true outcomes are known, played week by
week through the same sensors and automation production runs (`run.py`).

- `scenario`, `simulation`, `draws`, `feedback_and_tools`, `world_text`: the world and its truth.
- `landing_files`, `malformed_records`, `world`: the world written as landing files, defects included.
- `annotators`: simulated annotators labelling each week's queue.
- `fake_openai`, `fake_agent`: loopback OpenAI-compatible judge and agent servers.
- `releases_report`: what was planted and what the pipeline found.

Not here: any pipeline logic; the demo only drops files and lets automation decide.
"""
