using System.CommandLine;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;
using Potluck.Node.Hosting;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Multiformats;
using Potluck.Scheduler.Credits;
using Potluck.Scheduler.Execution;
using Potluck.Scheduler.Leasing;
using Potluck.Scheduler.Requesting;

namespace Potluck.Node.Cli;

/// <summary>`potluck submit` and `potluck ledger`.</summary>
internal static class ComputeCommands
{
    private static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..];

    /// <summary>Micro-credits as credits with six decimals.</summary>
    public static string FormatCredits(long micro) =>
        (micro / 1_000_000m).ToString("0.000000", CultureInfo.InvariantCulture);

    /// <summary>`potluck submit`: a short-lived requester that runs one task on another node and prints its output.</summary>
    internal sealed class SubmitCommand : PotluckCommand
    {
        public SubmitCommand(CliContext context)
            : base("submit", "Run a WebAssembly task on another node: its output goes to stdout, a summary to stderr.", context)
        {
            Arguments.Add(Module);
            Arguments.Add(TaskArgs);
            Options.Add(Input);
            Options.Add(Arg);
            Options.Add(Fuel);
            Options.Add(MaxPrice);
            Options.Add(VerifyRate);
            Options.Add(Replicas);
            Options.Add(Bootstrap);
            Options.Add(Listen);
            Options.Add(NoMdns);
            Options.Add(Wait);
            Options.Add(SwarmKey);
            Options.Add(Batch);
            Options.Add(OutDir);
            Options.Add(Parallel);
            Options.Add(DataDir);
            Options.Add(LogLevel);
            Options.Add(Json);
            Options.Add(NoDaemon);
        }

        public Option<bool> NoDaemon { get; } = CliOptions.Flag("--no-daemon",
            "start a short-lived node of its own even when a node runs on the data directory (by default the running node takes the task)");

        public Option<string> Batch { get; } = CliOptions.Path("--batch", "folder",
            "run the module once per file of this folder (each file the task's stdin), writing one output per input; run again, it resumes");

        public Option<string> OutDir { get; } = CliOptions.Path("--out", "folder", "where --batch writes its outputs, one file per input of the same name (default <batch folder>.out)");

        public Option<int?> Parallel { get; } = CliOptions.Int("--parallel", "n", "tasks of a --batch in flight at once (default 8)", 1, 256);

        public Option<bool> Json { get; } = HomeCommands.JsonOption();

        public Argument<string> Module { get; } = new("module.wasm")
        {
            Description = "the module to run: a wasm32-wasi command module, e.g. samples/hashchain/hashchain.wasm",
        };

        public Argument<string[]> TaskArgs { get; } = new("arg")
        {
            Description = "the task's arguments (argv[1..]), after the module; put them after -- when one starts with -",
            Arity = ArgumentArity.ZeroOrMore,
        };

        public Option<string> Input { get; } = CliOptions.Text("--input", "file|-", "the task's stdin: a file, or - for this process's stdin (default: empty)");

        public Option<string[]> Arg { get; } = CliOptions.Texts("--arg", "text", "an argument for the task, repeatable; added before those after the module");

        public Option<long?> Fuel { get; } = CliOptions.Long("--fuel", "n", "fuel budget (default 1000000000)", 1, long.MaxValue);

        public Option<long?> MaxPrice { get; } = CliOptions.Long("--max-price", "micro-credits",
            "most paid per million fuel, in micro-credits (a millionth of a credit; default 100, i.e. 0.0001 credits)", 0, 1_000_000_000);

        public Option<double?> VerifyRate { get; } = new("--verify-rate")
        {
            Description = "share of results re-run to check them, 0 < r <= 1 (default: adaptive per provider, down to 5 %)",
            HelpName = "r",
            CustomParser = r =>
            {
                var text = r.Tokens[^1].Value;
                if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var rate) && rate > 0 && rate <= 1)
                {
                    return rate;
                }
                r.AddError($"--verify-rate '{text}' must be a number above 0 and at most 1 (never 0: every result keeps some chance of a check)");
                return null;
            },
        };

        public Option<int?> Replicas { get; } = CliOptions.Int("--replicas", "k", "run on k providers at once and compare their results (default 1)", 1, 16);

        public Option<Multiaddr[]> Listen { get; } = CliOptions.Addresses("--listen",
            "listen here too (default nowhere): behind a NAT, a provider reached through a relay can then hole-punch to this requester", needPeerId: false);

        public Option<Multiaddr[]> Bootstrap { get; } = CliOptions.Addresses("--bootstrap",
            "a node to join through, …/p2p/<peer id>, repeatable (e.g. a provider's address)", needPeerId: true);

        public Option<bool> NoMdns { get; } = CliOptions.Flag("--no-mdns", "do not look for providers on the local network by mDNS");

        public Option<int?> Wait { get; } = CliOptions.Int("--wait", "seconds", "how long to wait for providers to be found (default 30)", 1, 3600);

        public Option<string> SwarmKey { get; } = Commands.SwarmKeyOption("join only the private network of this swarm.key");

        public Option<string> DataDir { get; } = Commands.DataDirOption("the requester's identity and ledger (default <default data dir>/requester)");

        public Option<LogLevel?> LogLevel { get; } = CliOptions.LogLevel(Microsoft.Extensions.Logging.LogLevel.Warning);

        protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
        {
            var module = await ReadModuleAsync(result.GetValue(Module)!, ct);
            var batch = result.GetValue(Batch);
            if (batch is not null && result.GetValue(Input) is not null)
            {
                throw new UsageException("--batch and --input both give the task's stdin: use one (--batch runs once per file of its folder)");
            }
            var batchInputs = batch is null ? null : BatchRunner.Inputs(batch);
            var input = batch is null ? await ReadInputAsync(result.GetValue(Input), ct) : [];
            var taskArgs = (result.GetValue(Arg) ?? []).Concat(result.GetValue(TaskArgs) ?? []).ToArray();
            if (taskArgs.Length > TaskPayload.MaxArgs || taskArgs.Sum(a => Encoding.UTF8.GetByteCount(a)) > TaskPayload.MaxArgBytes)
            {
                throw new UsageException($"too many task arguments: at most {TaskPayload.MaxArgs}, of {TaskPayload.MaxArgBytes / 1024} KiB together");
            }
            var replicas = result.GetValue(Replicas) ?? 1;
            var wait = TimeSpan.FromSeconds(result.GetValue(Wait) ?? 30);
            var bootstrap = result.GetValue(Bootstrap) ?? [];
            var swarmKey = Commands.LoadSwarmKey(result.GetValue(SwarmKey));
            TaskSubmission Submission(byte[] stdin) => new()
            {
                Module = module,
                Input = stdin,
                Args = taskArgs,
                Fuel = result.GetValue(Fuel) ?? 1_000_000_000,
                MaxPricePerMegaFuel = result.GetValue(MaxPrice) ?? 100,
                VerifyRate = result.GetValue(VerifyRate),
                Replicas = replicas,
            };

            // A node running on the data directory (by default the one `potluck run` uses) takes the job: no second node.
            var daemonDir = result.GetValue(DataDir) ?? Context.DefaultDataDir();
            if (!result.GetValue(NoDaemon) && await DaemonSubmitter.TryConnectAsync(daemonDir, ct) is { } daemon)
            {
                await using (daemon)
                {
                    await Error.WriteLineAsync($"potluck submit: handing the task to the node running on {daemonDir} ({daemon.PeerId}); its peers, swarm key and ledger are used" +
                        (bootstrap.Length > 0 || swarmKey is not null ? " (--bootstrap and --swarm-key are the node's business here)" : ""));
                    try
                    {
                        return await ReportAsync(daemon.SubmitAsync, Submission, input, batch, batchInputs, result, TimeProvider.System, ct);
                    }
                    catch (Control.ControlException e)
                    {
                        await Error.WriteLineAsync($"potluck submit: the node running on {daemonDir} refused the task: {e.Message}");
                        return 1;
                    }
                }
            }
            var dataDir = result.GetValue(DataDir) ?? Path.Combine(Context.DefaultDataDir(), "requester");

            // One requester process at a time on a data directory: a second `potluck submit` sharing it waits its turn, so
            // neither releases the other's reservations at start and every task is paid.
            using var requesterLock = await LockRequesterAsync(dataDir, ct);

            // The short-lived requester: its own identity and ledger, listening nowhere, with compute on and providing off.
            var builder = PotluckNode.CreateBuilder();
            builder.Logging.SetMinimumLevel(result.GetValue(LogLevel) ?? Microsoft.Extensions.Logging.LogLevel.Warning);
            builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
            builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = Microsoft.Extensions.Logging.LogLevel.Trace);
            builder.Configure(o => o with
            {
                DataDir = dataDir,
                Bootstrap = bootstrap,
                Listen = result.GetValue(Listen) ?? [],
                Discovery = o.Discovery with { Mdns = !result.GetValue(NoMdns) },
                Compute = o.Compute with { Enabled = true, Provide = false },
            });
            if (swarmKey is not null)
            {
                builder.UseSwarmKey(swarmKey);
            }
            await using var node = builder.Build();
            try
            {
                await node.StartAsync(ct);
            }
            catch (Exception e) when (Commands.StartFailure(e) is { } message)
            {
                await Error.WriteLineAsync($"potluck submit: {message}");
                return 1;
            }
            var compute = node.Compute!;
            {
                using (var waiting = CancellationTokenSource.CreateLinkedTokenSource(ct))
                {
                    waiting.CancelAfter(wait);
                    try
                    {
                        await compute.Client.WaitForProvidersAsync(replicas, waiting.Token);
                    }
                    catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                    {
                        if (compute.Client.Providers().Count == 0)
                        {
                            await Error.WriteLineAsync($"potluck submit: no provider found within {wait.TotalSeconds:0} s. " +
                                (bootstrap.Length == 0 ? "Give one with --bootstrap <address of a `potluck run` node>." : "Are the --bootstrap nodes running `potluck run`?"));
                            return 1;
                        }
                    }
                }
                return await ReportAsync(compute.SubmitAsync, Submission, input, batch, batchInputs, result, node.Runtime.Time, ct);
            }
        }

        /// <summary>Runs the task or the batch through <paramref name="submit"/> (a node of its own, or the running daemon) and prints what came of it.</summary>
        private async Task<int> ReportAsync(Func<TaskSubmission, CancellationToken, Task<SubmissionResult>> submit, Func<byte[], TaskSubmission> Submission,
            byte[] input, string? batch, IReadOnlyList<string>? batchInputs, ParseResult result, TimeProvider time, CancellationToken ct)
        {
            try
            {
                if (batchInputs is not null)
                {
                    var outDir = result.GetValue(OutDir) ?? Path.TrimEndingDirectorySeparator(batch!) + ".out";
                    var runner = new BatchRunner(submit, Error, Submission, result.GetValue(Parallel) ?? 8, time);
                    var summary = await runner.RunAsync(batchInputs, outDir, new LeaseOptions().MaxInputBytes, ct);
                    if (result.GetValue(Json))
                    {
                        await HomeCommands.WriteJsonAsync(Out, new System.Text.Json.Nodes.JsonObject
                        {
                            ["inputs"] = summary.Total,
                            ["already_done"] = summary.Skipped,
                            ["done"] = summary.Done,
                            ["failed"] = summary.Failed,
                            ["verified"] = summary.Verified,
                            ["unresolved"] = summary.Unresolved.Count,
                            ["unresolved_inputs"] = new System.Text.Json.Nodes.JsonArray([.. summary.Unresolved.Select(u => (System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonObject
                            {
                                ["input"] = u.Input,
                                ["unresolved"] = Control.SubmitControl.UnresolvedName(u.Reason),
                            })]),
                            ["cost_micro_credits"] = summary.Cost,
                            ["out"] = Path.GetFullPath(outDir),
                            ["failures"] = new System.Text.Json.Nodes.JsonArray(summary.Failures.Select(f => (System.Text.Json.Nodes.JsonNode)f).ToArray()),
                        });
                    }
                    await Error.WriteLineAsync($"potluck submit: batch of {summary.Total}: {summary.Done} done now, {summary.Skipped} done before, {summary.Failed} failed, " +
                        $"{summary.Verified} verified, {(summary.Unresolved.Count > 0 ? $"{summary.Unresolved.Count} unresolved, " : "")}" +
                        $"cost {FormatCredits(summary.Cost)} credits; outputs in {Path.GetFullPath(outDir)}");
                    foreach (var (name, reason) in summary.Unresolved.Take(20))
                    {
                        await Error.WriteLineAsync($"  {name}: {UnresolvedMarker(reason)}");
                    }
                    foreach (var failure in summary.Failures.Take(20))
                    {
                        await Error.WriteLineAsync($"  failed: {failure}");
                    }
                    if (summary.Failed > 0)
                    {
                        await Error.WriteLineAsync("potluck submit: run the same command again to retry the failed inputs (finished ones are kept)");
                    }
                    return summary.Failed == 0 ? 0 : 1;
                }
                var submission = await submit(Submission(input), ct);
                if (result.GetValue(Json))
                {
                    await HomeCommands.WriteJsonAsync(Out, ResultJson(submission));
                    return ExitCodeOf(submission);
                }
                await WriteOutputAsync(submission.Output, ct);
                await WriteTaskStderrAsync(submission.Stderr, ct);
                await Error.WriteLineAsync(ResultLine(submission));
                if (submission.Unresolved is { } unresolved)
                {
                    await Error.WriteLineAsync($"potluck submit: {UnresolvedMarker(unresolved)}");
                }
                foreach (var attempt in submission.History.Where(a => a.Outcome != LeaseOutcomeKind.Completed || a.Detail.Length > 0))
                {
                    await Error.WriteLineAsync($"  attempt on {attempt.Provider}: {attempt.Outcome} {attempt.Detail}".TrimEnd());
                }
                if (!submission.Succeeded)
                {
                    await Error.WriteLineAsync($"potluck submit: the task did not succeed: {Outcome(submission)}" + (submission.Error is { Length: > 0 } why ? $" ({why})" : ""));
                    return ExitCodeOf(submission);
                }
                return 0;
            }
            catch (SubmissionException e)
            {
                if (result.GetValue(Json))
                {
                    await HomeCommands.WriteJsonAsync(Out, SubmissionFailureJson(e));
                }
                await Error.WriteLineAsync($"potluck submit: {e.Message}");
                return 1;
            }
        }

        /// <summary>A submission that produced no result, for --json: the message, each reason no provider fit with its count, and the attempts.</summary>
        internal static System.Text.Json.Nodes.JsonObject SubmissionFailureJson(SubmissionException e)
        {
            var reasons = new System.Text.Json.Nodes.JsonObject();
            foreach (var (reason, count) in e.Reasons.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal))
            {
                reasons[reason] = count;
            }
            return new System.Text.Json.Nodes.JsonObject
            {
                ["status"] = "failed",
                ["error"] = e.Message,
                ["reasons"] = reasons,
                ["attempts"] = new System.Text.Json.Nodes.JsonArray(e.Attempts.Select(a => (System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonObject
                {
                    ["provider"] = a.Provider.ToString(),
                    ["outcome"] = a.Outcome.ToString().ToLowerInvariant(),
                    ["detail"] = a.Detail,
                }).ToArray()),
            };
        }

        /// <summary>What `potluck submit --json` prints for a task that produced a result.</summary>
        internal static System.Text.Json.Nodes.JsonObject ResultJson(SubmissionResult submission)
        {
            var text = System.Text.Unicode.Utf8.IsValid(submission.Output.Span) ? Encoding.UTF8.GetString(submission.Output.Span) : null;
            return new System.Text.Json.Nodes.JsonObject
            {
                ["status"] = submission.Status.ToString().ToLowerInvariant(),
                ["exit_code"] = submission.ExitCode,
                ["provider"] = submission.Provider.ToString(),
                ["fuel"] = submission.Fuel,
                ["cost_micro_credits"] = submission.Cost,
                ["verified"] = submission.Verified,
                ["unresolved"] = Control.SubmitControl.UnresolvedName(submission.Unresolved),
                ["attempts"] = submission.Attempts,
                ["output"] = text,
                ["output_base64"] = text is null ? Convert.ToBase64String(submission.Output.Span) : null,
                ["stderr"] = System.Text.Unicode.Utf8.IsValid(submission.Stderr.Span) ? Encoding.UTF8.GetString(submission.Stderr.Span) : null,
                ["stderr_base64"] = System.Text.Unicode.Utf8.IsValid(submission.Stderr.Span) ? null : Convert.ToBase64String(submission.Stderr.Span),
                ["error"] = submission.Error,
            };
        }

        /// <summary>The summary line `potluck submit` prints (to stderr) for a task that produced a result.</summary>
        internal static string ResultLine(SubmissionResult submission) =>
            $"potluck submit: {Outcome(submission)} on {submission.Provider}, fuel {submission.Fuel:N0}, cost {FormatCredits(submission.Cost)} credits, " +
            $"{(submission.Unresolved is not null ? "unresolved" : submission.Verified ? "verified" : "not re-checked")}, " +
            $"{submission.Attempts} attempt{(submission.Attempts == 1 ? "" : "s")}";

        /// <summary>
        /// The marker for a result whose dispute stayed open (<see cref="SubmissionResult.Unresolved"/>): the result is the
        /// sampled provider's, unverified; nobody was convicted or paid as verified. The exit code is not changed by it, as
        /// for any other unverified result.
        /// </summary>
        internal static string UnresolvedMarker(UnresolvedReason reason) => reason switch
        {
            UnresolvedReason.NoAgreement =>
                "unverified: the checker disagreed and the third provider in good standing agreed with neither, so nobody could decide",
            _ => "unverified: the checker disagreed and no third provider in good standing could decide",
        };

        /// <summary>How the task ended, in words: an exit code is reported as one, not as a trap.</summary>
        internal static string Outcome(SubmissionResult r) => r.Status switch
        {
            ExecutionStatus.Success => "success",
            ExecutionStatus.Trapped when r.ExitCode != 0 => $"exited with code {r.ExitCode}",
            ExecutionStatus.Trapped => "trapped (a WebAssembly trap: unreachable, out-of-bounds access, or the like)",
            ExecutionStatus.OutOfFuel => "out of fuel (raise --fuel)",
            ExecutionStatus.OutOfMemory => "out of memory",
            ExecutionStatus.InvalidModule => "not a module the sandbox runs (wasm32-wasi command module expected)",
            ExecutionStatus.OutputTooLarge => "output too large",
            ExecutionStatus.TimedOut => "timed out on the provider",
            _ => r.Status.ToString().ToLowerInvariant(),
        };

        /// <summary>Holds the requester's data directory, waiting while another `potluck submit` holds it.</summary>
        private async Task<IDisposable> LockRequesterAsync(string dataDir, CancellationToken ct)
        {
            Protocol.Runtime.OwnerOnly.CreateDirectory(dataDir);
            var told = false;
            while (true)
            {
                try
                {
                    return Control.ControlFiles.LockDataDir(dataDir);
                }
                catch (Control.DataDirInUseException) when (!ct.IsCancellationRequested)
                {
                    if (!told)
                    {
                        told = true;
                        await Error.WriteLineAsync($"potluck submit: another potluck submit is using {dataDir}; waiting for it to finish (or give another --data-dir)");
                    }
                    await Task.Delay(TimeSpan.FromMilliseconds(200), ct);
                }
            }
        }

        private static async Task<byte[]> ReadModuleAsync(string path, CancellationToken ct)
        {
            if (!File.Exists(path))
            {
                throw new UsageException(Directory.Exists(path)
                    ? $"'{path}' is a directory: give the path of a .wasm file (wasm32-wasi command module)"
                    : $"no module at '{path}': give the path of a .wasm file (wasm32-wasi command module)");
            }
            var limit = new LeaseOptions().MaxModuleBytes;
            var length = new FileInfo(path).Length;
            if (length > limit)
            {
                throw new UsageException($"'{path}' is {ByteSize.Format(length)}; a module may be at most {ByteSize.Format(limit)}");
            }
            var module = await File.ReadAllBytesAsync(path, ct);
            if (module.Length < 8 || module[0] != 0 || module[1] != (byte)'a' || module[2] != (byte)'s' || module[3] != (byte)'m')
            {
                throw new UsageException($"'{path}' is not a WebAssembly binary (it does not start with \\0asm); build it with clang --target=wasm32-wasi");
            }
            return module;
        }

        private static async Task<byte[]> ReadInputAsync(string? path, CancellationToken ct)
        {
            var limit = new LeaseOptions().MaxInputBytes;
            if (path is null)
            {
                return [];
            }
            if (path == "-")
            {
                using var buffer = new MemoryStream();
                await using var stdin = Console.OpenStandardInput();
                var chunk = new byte[81920];
                int read;
                while ((read = await stdin.ReadAsync(chunk, ct)) > 0)
                {
                    if (buffer.Length + read > limit)
                    {
                        throw new UsageException($"--input -: stdin is over {ByteSize.Format(limit)}, the most a task may be given");
                    }
                    buffer.Write(chunk, 0, read);
                }
                return buffer.ToArray();
            }
            if (!File.Exists(path))
            {
                throw new UsageException($"--input: no file at '{path}' (use - to read stdin)");
            }
            var length = new FileInfo(path).Length;
            return length > limit
                ? throw new UsageException($"--input: '{path}' is {ByteSize.Format(length)}; a task may be given at most {ByteSize.Format(limit)}")
                : await File.ReadAllBytesAsync(path, ct);
        }

        /// <summary>The task's stderr as it is, on this process's stderr (bytes and all when it is the real one).</summary>
        private async Task WriteTaskStderrAsync(ReadOnlyMemory<byte> stderr, CancellationToken ct)
        {
            if (stderr.IsEmpty)
            {
                return;
            }
            if (ReferenceEquals(Error, Console.Error))
            {
                await Console.Error.FlushAsync(ct);
                await using var raw = Console.OpenStandardError();
                await raw.WriteAsync(stderr, ct);
                await raw.FlushAsync(ct);
            }
            else
            {
                await Error.WriteAsync(Encoding.UTF8.GetString(stderr.Span));
            }
        }

        /// <summary>
        /// The exit code of `potluck submit` for a task that produced a result: 0 on success, the task's own exit code when
        /// it exited with one (as ssh and docker run do), 1 otherwise.
        /// </summary>
        internal static int ExitCodeOf(SubmissionResult r) =>
            r.Succeeded ? 0 : r.Status == ExecutionStatus.Trapped && r.ExitCode is > 0 and < 256 ? r.ExitCode : 1;

        /// <summary>The task's output as it is, bytes and all, when writing to the process's own stdout.</summary>
        private async Task WriteOutputAsync(ReadOnlyMemory<byte> output, CancellationToken ct)
        {
            if (ReferenceEquals(Out, Console.Out))
            {
                await Console.Out.FlushAsync(ct);
                await using var stdout = Console.OpenStandardOutput();
                await stdout.WriteAsync(output, ct);
                await stdout.FlushAsync(ct);
            }
            else
            {
                await Out.WriteAsync(Encoding.UTF8.GetString(output.Span));
            }
        }
    }

    /// <summary>`potluck ledger`: a node's balance and recent entries.</summary>
    internal sealed class LedgerCommand : PotluckCommand
    {
        public LedgerCommand(CliContext context) : base("ledger", "Show a node's credit balance and recent ledger entries.", context)
        {
            Options.Add(DataDir);
            Options.Add(Count);
            Options.Add(Verify);
            Options.Add(Json);
        }

        public Option<bool> Json { get; } = HomeCommands.JsonOption();

        public Option<bool> Verify { get; } = CliOptions.Flag("--verify",
            "audit the node's own payment chain (signatures, sequence, previous hashes, each payment against its ledger entry) " +
            "and the counterparties' half-blocks it holds; exit code 1 when anything does not check");

        public Option<string> DataDir { get; } = Commands.DataDirOption("the node whose ledger to show (default $POTLUCK_DATA_DIR, else ~/.local/share/potluck)");

        public Option<int?> Count { get; } = CliOptions.Int("--count", "n", "recent entries to list (default 20)", 1, 10_000);

        protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
        {
            var dataDir = result.GetValue(DataDir) ?? Context.DefaultDataDir();
            var count = result.GetValue(Count) ?? 20;
            var json = result.GetValue(Json);
            var verify = result.GetValue(Verify);
            // A running node holds its ledger: ask it. Otherwise read the file.
            System.Text.Json.Nodes.JsonObject? answer = null;
            try
            {
                await using var client = await Control.ControlClient.ConnectAsync(dataDir, null, ct);
                answer = verify
                    ? await client.CallAsync(Control.ChainControl.VerifyMethod, new System.Text.Json.Nodes.JsonObject(), ct) as System.Text.Json.Nodes.JsonObject
                    : await client.CallAsync(Control.NodeControl.LedgerMethod, new System.Text.Json.Nodes.JsonObject { ["count"] = count }, ct) as System.Text.Json.Nodes.JsonObject;
            }
            catch (Control.NodeNotRunningException)
            {
            }
            if (answer is null)
            {
                var keyFile = Path.Combine(dataDir, NodeConfiguration.IdentityFileName);
                if (!File.Exists(keyFile) || !File.Exists(Path.Combine(dataDir, CreditLedger.FileName)))
                {
                    await Error.WriteLineAsync($"potluck ledger: no ledger in '{dataDir}' yet; a node creates one when it first runs " +
                        "(potluck run; potluck submit keeps its own in <data dir>/requester)");
                    return 1;
                }
                var owner = PrivateKey.LoadOrCreate(keyFile);
                using var local = CreditLedger.Open(dataDir, owner.PeerId, new CreditsOptions(), TimeProvider.System);
                answer = verify
                    ? Control.ChainControl.AuditJson(owner.PeerId.ToString(), local, Scheduler.Accounting.ChainAudit.Verify(local))
                    : Control.NodeControl.LedgerJson(owner.PeerId.ToString(), local, count);
            }
            if (verify)
            {
                return await PrintAuditAsync(answer, json);
            }
            if (json)
            {
                await HomeCommands.WriteJsonAsync(Out, answer);
                return 0;
            }
            await Out.WriteLineAsync($"Node:      {answer["peer_id"]!.GetValue<string>()}");
            await Out.WriteLineAsync($"Balance:   {FormatCredits(answer["balance"]!.GetValue<long>())} credits");
            await Out.WriteLineAsync($"Available: {FormatCredits(answer["available"]!.GetValue<long>())} credits (balance less payments reserved for running leases)");
            await Out.WriteLineAsync();
            await Out.WriteLineAsync($"{"#",-6} {"when (UTC)",-20} {"kind",-7} {"credits",16}  counterparty");
            foreach (var e in answer["entries"]!.AsArray())
            {
                var at = DateTimeOffset.Parse(e!["at"]!.GetValue<string>(), CultureInfo.InvariantCulture);
                await Out.WriteLineAsync($"{e["seq"]!.GetValue<long>(),-6} {at.UtcDateTime:yyyy-MM-dd HH:mm:ss} {Capitalize(e["kind"]!.GetValue<string>()),-7} " +
                                         $"{FormatCredits(e["amount"]!.GetValue<long>()),16}  {e["counterparty"]?.GetValue<string>() ?? "(initial grant)"}");
            }
            return 0;
        }

        private async Task<int> PrintAuditAsync(System.Text.Json.Nodes.JsonObject answer, bool json)
        {
            var sound = answer["sound"]!.GetValue<bool>();
            if (json)
            {
                await HomeCommands.WriteJsonAsync(Out, answer);
                return sound ? 0 : 1;
            }
            await Out.WriteLineAsync($"Node:      {answer["peer_id"]!.GetValue<string>()}");
            await Out.WriteLineAsync($"Chain:     {answer["blocks"]!.GetValue<long>()} blocks ({answer["proposals"]!.GetValue<long>()} payments made, " +
                                     $"{answer["agreements"]!.GetValue<long>()} received), checked in {answer["elapsed_ms"]!.GetValue<double>():0.#} ms");
            await Out.WriteLineAsync($"Linked:    {answer["linked_blocks"]!.GetValue<long>()} counterparty half-blocks held and checked; " +
                                     $"{answer["unlinked"]!.GetValue<long>()} payments not yet countersigned (sent again while the node runs)");
            await Out.WriteLineAsync($"Paid:      {FormatCredits(answer["paid"]!.GetValue<long>())} credits; earned {FormatCredits(answer["earned"]!.GetValue<long>())} credits");
            var forkers = answer["forkers"]!.AsArray();
            if (forkers.Count > 0)
            {
                await Out.WriteLineAsync($"Forkers:   {forkers.Count} identities refused on a fork proof held here");
            }
            if (sound)
            {
                await Out.WriteLineAsync("Verdict:   sound");
                return 0;
            }
            await Out.WriteLineAsync("Verdict:   NOT sound");
            foreach (var p in answer["problems"]!.AsArray())
            {
                await Out.WriteLineAsync($"  {p!.GetValue<string>()}");
            }
            return 1;
        }
    }
}
