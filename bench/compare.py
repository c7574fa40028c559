"""The fused loop side by side with brax's SAC (bench/brax_sac.py) and with an unfused loop of
our own agent (bench/unfused.py), on the same tasks, networks, batch per task and UTD
(`python bench/throughput.py --quick`). `args`: bench/throughput.py's Args."""

from bench import brax_sac, unfused
from bench.fused import measure_fused
from purejaxbrc import program
from purejaxbrc.config import Experiment, RunConfig
from purejaxbrc.sac import SACConfig

CHEAP = "CartpoleBalance,CartpoleSwingup,PendulumSwingup"


def compare_config(args, tasks: str, num_seeds: int, steps: int) -> Experiment:
    """Our side of a comparison: the networks, batch per task and UTD brax gets; half of the
    steps warm up (two chunks: bench/fused.py times the env-only rate on the second, as the
    first also starts the environments), a quarter learn untimed (brax's first epoch, which
    compiles), a quarter is timed (brax's second epoch). Brax and the unfused loop warm up as
    long."""
    n = len(tasks.split(","))
    chunk = steps // 4
    return Experiment(
        RunConfig(tasks=tasks, num_seeds=num_seeds, batch_size=args.compare_batch * n, utd=2,
                  warmup_iterations=2 * chunk, chunk_iterations=chunk, eval_every=chunk,
                  total_iterations=steps, eval_episodes=1),
        SACConfig(critic_width=args.compare_width, actor_width=args.compare_width, actor_depth=2))


def compare(args, log) -> tuple[list[dict], dict]:
    """(i) one task, one seed and (ii) three tasks x `compare_seeds` seeds: our fused loop (one
    program) against brax SAC (one run per task and seed, one after another); for (i) also the
    unfused loop with our own agent."""
    steps = args.compare_steps or (600 if args.quick else 2000)
    records, ratios = [], {}
    for label, tasks, seeds in (("single", "CartpoleSwingup", 1), ("multi", CHEAP, args.compare_seeds)):
        experiment = compare_config(args, tasks, seeds, steps)
        config = experiment.run
        log(f"{label}: fused loop, {tasks} x {seeds} seeds ...")
        ours = measure_fused("mjx", experiment, timed_chunks=max(1, steps // config.chunk - 3))
        ours.update(name=f"fused_{label}")
        hidden = 1 + 2 * experiment.agent.critic_depth  # BroNet matmuls before the head
        log(f"{label}: brax SAC, {len(tasks.split(','))} tasks x {seeds} seeds, one run each ...")
        runs = [brax_sac.measure(task, config.seed + s, env_steps=steps,
                                 warmup=config.warmup_iterations, width=args.compare_width,
                                 hidden_layers=hidden, batch_size=args.compare_batch, utd=config.utd)
                for task in tasks.split(",") for s in range(seeds)]
        brax = dict(name=f"brax_sac_{label}", kind="brax_sac", tasks=tasks.split(","), num_seeds=seeds,
                    runs=runs, width=args.compare_width, hidden_layers=hidden,
                    batch_size=args.compare_batch, utd=config.utd,
                    env_steps_per_s=sum(r["timed_env_steps"] for r in runs) / sum(r["timed_s"] for r in runs),
                    total_s=sum(r["total_s"] for r in runs))
        key = "ratio_vs_brax_sac_single" if label == "single" else "ratio_vs_brax_sac"
        ratios[key] = ours["env_steps_per_s"] / brax["env_steps_per_s"]
        log(f"{label}: fused {ours['env_steps_per_s']:,.1f} env-steps/s, brax SAC "
            f"{brax['env_steps_per_s']:,.1f} -> {key} = {ratios[key]:.2f}")
        records += [ours, brax]
        if label == "single":
            log("single: unfused loop ...")
            built = program.build(program.plan("mjx", experiment))
            slow = unfused.measure(built.plan.experiment.run, built.env, built.agent,
                                   iterations=max(100, steps // 3), warmup=config.warmup_iterations)
            ratios["ratio_vs_unfused"] = ours["env_steps_per_s"] / slow["env_steps_per_s"]
            log(f"single: fused {ours['env_steps_per_s']:,.1f} env-steps/s, unfused "
                f"{slow['env_steps_per_s']:,.1f} -> ratio_vs_unfused = {ratios['ratio_vs_unfused']:.2f}")
            records.append(dict(slow, name="unfused_single", kind="unfused", tasks=[tasks], num_seeds=1,
                                critic_width=experiment.agent.critic_width, batch_size=config.batch_size,
                                utd=config.utd))
    return records, ratios
