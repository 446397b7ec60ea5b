"""The embedded demo study: 4 real-text domains, a tiny GPT-2, 2-core CPU.

DDO at two small budgets (3 seeds, each its own initialization), projection
to the paper's next budget (2x the larger one), and the final training of the
projected mixture against uniform (5 seeds). Measured on 2 idle cores:
9 min 9 s from a fresh clone, 12 min 17 s on an empty home directory (venv
install and cold corpus build included; issue 13's limit is 15 minutes).
Every setting below that differs from base_config was chosen by measurement
(docs/results.md: "The committed design, and why", and the earlier designs'
screenings, each at one DDO budget with 3 seeds, scored by the noise and the
median 90% interval width of the DDO weights).
"""

from autoscale_jax import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.study = "demo"
  c.data.source = "embedded"
  # Four of the seven embedded domains, the most distinct sources (prose,
  # code, LaTeX, legal text). With fewer domains each one's 0.2x / 3x
  # perturbation moves a quarter of the budget instead of a seventh, a budget
  # costs 2m + 1 = 9 runs per seed instead of 15, and qa (615k unique
  # tokens) no longer caps the budgets. Screened: 7 domains at 1e5 tokens
  # (3 seeds, batch 32) gave a median interval width of 0.127.
  c.data.domains = ("books", "code", "latex", "legal")
  c.data.max_mb_per_domain = 8.0
  # 128 held-out sequences of 128 tokens per domain (base_config: 64): the
  # bootstrap over held-out sequences puts the evaluation noise of one run
  # pair's y at a few tenths of a percent, a small fraction of the seed
  # noise and of the domain effects (docs/results.md).
  c.data.heldout_max_sequences = 128
  c.data.tokenizer = "sentencepiece"
  # The model and vocabulary were shrunk (2026-12-02; were d_model 64, 4
  # heads, mlp 256, vocab 1024) to get further along the loss curve within
  # the 15 minutes (issue 13: the budgets must leave the steep first phase of
  # training): this one trains 1.5-2.1x as many
  # tokens per second on 2 cores as the d_model 64 model at the same
  # vocabulary (`bench/bench_train.py --steps 300 --only tiny,demo
  # --steps_per_call 10`, two runs: 83k and 114k vs 54k and 55k tokens/s,
  # docs/benchmarks.md) and has 46k parameters instead of 174k. Its held-out loss in
  # demo A (docs/results.md; base runs, mean of 3 seeds) is 4.23 at 4e5
  # tokens, 3.81 at 8e5 and 3.55 at 1.6e6 (uniform, 5 seeds): 0.42 and 0.26
  # nats per doubling, flattening but not flat; the old model fell 0.57 and
  # 0.51 per doubling at its 2e5 / 4e5 / 1.6e6 budgets.
  c.data.vocab_size = 512
  c.model.kind = "gpt2"
  c.model.num_layers = 2
  c.model.d_model = 32
  c.model.num_heads = 2
  c.model.mlp_dim = 128
  c.model.max_len = 128
  c.train.seq_len = 128
  c.train.global_batch_size = 16
  # Screened at one DDO budget (5e5 tokens, 3 seeds, each seed its own
  # initialization): lr 1.5e-3 seed noise 2.0%, domain signal / noise 2.9,
  # median 90% width 0.04, base loss 4.45; lr 3e-3 2.3%, 1.6, 0.044, 4.09;
  # lr 6e-3 4.7%, 1.3, 0.07, 3.88. 3e-3: as narrow as 1.5e-3 and a third of
  # a nat further along the curve (the steep phase is what the budgets must
  # leave). The old model's screening (lr 1.5e-3 against 3e-3, batch 32 and
  # 64) is in docs/results.md's earlier designs.
  c.train.learning_rate = 3e-3
  # Three seeds per DDO run; each seed is its own initialization and data
  # order (config.init_seeds = "per_seed"), the runs of one seed share both
  # but for the perturbation. With one initialization for every run (the
  # earlier designs) the bootstrap could not see the initialization's
  # variance: a demo with another config.seed fell inside the first one's
  # 90% intervals for only 3-6 of 8 weights (docs/results.md). Budgets 4e5
  # and 8e5 tokens, target 1.6e6 = 8e5^2 / 4e5, the paper's own next budget:
  # as far along the loss curve as the 15 minutes allow with a margin: 9 min
  # 9 s idle. 5e5 / 1e6 with target 2e6 (demo E in docs/results.md) took 13
  # min 56 s idle before a fresh clone's setup; its verdict flipped between
  # two demos (-0.8% significant with seed 42, +0.3% not with 1042).
  c.ddo.budgets = (4e5, 8e5)
  # A fourth seed was measured and not adopted: over the same three demos
  # the 4e5 optima's cross-demo coverage went from 58% to 54% (inside the
  # replication intervals 75% -> 79%), demo C's median width to 0.11, for
  # 131-155 s more DDO training.
  c.ddo.seeds = (0, 1, 2)
  # ppl_seq (the paper's metric) stays: ppl_tok gave the same noise and
  # widths within 5% in every screened design; loss and bits per byte have a
  # 5x smaller relative noise but also 5x smaller effects (the same signal /
  # noise) and gave 2-3x wider weight intervals.
  c.ddo.metric = "ppl_seq"
  # The bootstrap's noise model was chosen by the calibration of its
  # intervals across replicate demos (docs/results.md, "Interval
  # calibration"; bench/interval_coverage.py on demos A, B, C, no retraining):
  # the fraction of checks where one demo's optimum falls inside another's
  # 90% interval (24 per budget), 1.25e5 / 2.5e5 tokens: "replicates" (every
  # run independent) 62% / 83% at median width 0.097 / 0.034; "paired" (what
  # a seed's runs share cancels in y) 38% / 67% at 0.058 / 0.027; resampling
  # whole seeds 8-12% / 29-33% (3 seeds are too few). Rule fixed in advance:
  # >= ~75% at both budgets with width < 0.1; none reached it at 1.25e5, and
  # "replicates" is the best trade-off (within one initialization, disjoint
  # 3-seed subsets of demos A + C: 88% / 90% vs paired 78% / 75%). At the
  # 2e5 / 4e5 budgets (three new demos): "replicates" 79% / 92% at width
  # 0.047 / 0.024, "paired" 62% / 88% at 0.031 / 0.023. At the committed
  # 4e5 / 8e5, each seed its own initialization (demos A, B, C of
  # docs/results.md): "replicates" 58% / 96% at 0.050 / 0.031 (inside the
  # replication intervals 75% / 100%), "paired" 50% / 75% at 0.037 / 0.021;
  # with more replicate studies ("Replication: seven demos, eleven studies
  # at 4e5"): "replicates" 80% at 4e5 (11 studies, width 0.060), 92% at 8e5
  # (7 demos, 0.031), replication intervals 92% / 95%: calibrated. A
  # design-level noise floor (each study's noise raised to the pooled noise
  # of the other ten) over-covered at 4e5 (90% / 98%, width 0.077).
  c.ddo.noise_model = "replicates"
  c.project.target_tokens = 1.6e6  # 2x the larger DDO budget (see above)
  # The paper's two-budget rule, the method this demo shows. At this design
  # (docs/results.md, demos A, B, C) no estimator's mixture differed
  # measurably when trained: the paper's projection was -0.1% / +0.5% /
  # -0.4% ppl_seq against uniform and +0.1% / +0.4% / -0.2% against the 8e5
  # optimum reused (ddo_last), none significant. The simulator at this
  # design's noise (docs/method.md) prefers ddo_last (smallest weight errors
  # at 4x and 10x; the paper's rule loses to uniform in the median); at the
  # second design the corpus had preferred the paper's rule (-0.9% to -3.4%
  # against uniform). Every estimator is shown in project/estimates.json and
  # the report.
  c.project.estimator = "paper"
  # One run at a time: the swarm's calibration measured 1.05x for this model
  # on 2 cores (27 runs at 4e5 tokens: 16.9 ms a step one by one, 435 ms for
  # all 27 as one scan program), 1.02x and 0.93x for the previous one, below
  # its 1.2x threshold, and compiling the vmap and scan programs of 27 runs
  # to find that out costs time of its own. An execution setting: results
  # are the same either way.
  c.run.swarm = "off"
  # The verdict against uniform over 5 seeds (was 3 mixtures x 3 seeds, with
  # the small budget's optimum as a third): at 3 seeds two demos gave -1.7%
  # (significant) and -0.7% (95% CI -1.7% to +0.3%, every seed below uniform
  # all the same), so a t-interval on 2 degrees of freedom (t = 4.30) decided
  # the verdict. 5 seeds (t = 2.78 on 4) halve the interval for the price of
  # 10 runs instead of 9. Add "ddo_small" to train the small budget's optimum
  # too (docs/results.md has it over 3 seeds).
  c.final.mixtures = ("projected", "uniform")
  # Every 50 of the 782 steps (was 25 of 489): one evaluation of the 4 x 128
  # held-out sequences costs about 11 training steps, so every 25 steps was
  # a third of a final run's time; 16 points still place the speed-up.
  c.final.eval_every_steps = 50
  c.final.seeds = (0, 1, 2, 3, 4)  # verdict: mean, 95% CI, paired diffs
  return c
