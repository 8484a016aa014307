#!/usr/bin/env python3
"""Runs a libFuzzer binary for a bounded time: scratch dir (written), seed
corpus (read), seconds. Fails when the fuzzer finds a crash or mismatch."""
import os
import subprocess
import sys

exe, scratch, corpus, seconds = sys.argv[1:5]
os.makedirs(scratch, exist_ok=True)
cmd = [exe, scratch, corpus, f"-max_total_time={seconds}", "-max_len=4096",
       "-print_final_stats=1", f"-artifact_prefix={scratch}/"]
print(" ".join(cmd), flush=True)
sys.exit(subprocess.run(cmd).returncode)
