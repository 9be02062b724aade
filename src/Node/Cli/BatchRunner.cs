using System.Diagnostics;
using System.Globalization;
using Potluck.Scheduler.Requesting;
using Spectre.Console;

namespace Potluck.Node.Cli;

/// <summary>
/// `potluck submit --batch &lt;folder&gt;`: one module over every file of a folder, each file a task's stdin, run at once on
/// as many leases as <c>--parallel</c> allows across every provider the requester can use. Each output is written to
/// <c>&lt;out&gt;/&lt;input file name&gt;</c> through a temporary file renamed into place, so an output that exists is
/// complete: run again, the batch resumes with what has no output yet (failed ones included). Progress (done, running,
/// failed, verified, rate and time left) is a live bar on a terminal (Spectre.Console) and a line every few seconds
/// otherwise. A task's stderr, when it wrote any, is kept in <c>&lt;out&gt;/.&lt;input file name&gt;.stderr</c>.
/// </summary>
internal sealed class BatchRunner(Func<TaskSubmission, CancellationToken, Task<SubmissionResult>> submit, TextWriter error, Func<byte[], TaskSubmission> submission, int parallel, TimeProvider time)
{
    /// <summary>Most inputs in one batch folder.</summary>
    public const int MaxInputs = 100_000;

    internal sealed record Summary(int Total, int Skipped, int Done, int Failed, int Verified, long Cost, IReadOnlyList<string> Failures)
    {
        /// <summary>Inputs whose result is unverified because a dispute stayed open (<see cref="SubmissionResult.Unresolved"/>), by name.</summary>
        public IReadOnlyList<(string Input, UnresolvedReason Reason)> Unresolved { get; init; } = [];
    }

    /// <summary>The inputs of a folder (regular files, sorted by name; hidden files and subfolders left out).</summary>
    public static IReadOnlyList<string> Inputs(string folder)
    {
        if (!Directory.Exists(folder))
        {
            throw new UsageException(File.Exists(folder)
                ? $"--batch '{folder}' is a file: give a folder whose files are the inputs"
                : $"--batch: no folder at '{folder}'");
        }
        var files = Directory.EnumerateFiles(folder).Where(f => !Path.GetFileName(f).StartsWith('.')).Order(StringComparer.Ordinal).Take(MaxInputs + 1).ToList();
        if (files.Count > MaxInputs)
        {
            throw new UsageException($"--batch '{folder}' has more than {MaxInputs:N0} files; split it into several folders");
        }
        return files;
    }

    public async Task<Summary> RunAsync(IReadOnlyList<string> inputs, string outDir, long maxInputBytes, CancellationToken ct)
    {
        Protocol.Runtime.OwnerOnly.CreateDirectory(outDir);
        var pending = inputs.Where(i => !File.Exists(Path.Combine(outDir, Path.GetFileName(i)))).ToList();
        var skipped = inputs.Count - pending.Count;
        int done = 0, failed = 0, verified = 0, running = 0;
        long cost = 0;
        var failures = new List<string>();
        var unresolved = new List<(string Input, UnresolvedReason Reason)>();
        var started = time.GetTimestamp();
        using var gate = new SemaphoreSlim(parallel, parallel);

        async Task RunOneAsync(string input)
        {
            await gate.WaitAsync(ct);
            Interlocked.Increment(ref running);
            try
            {
                var name = Path.GetFileName(input);
                var length = new FileInfo(input).Length;
                if (length > maxInputBytes)
                {
                    throw new SubmissionException($"{name} is {ByteSize.Format(length)}; a task may be given at most {ByteSize.Format(maxInputBytes)}", []);
                }
                var result = await submit(submission(await File.ReadAllBytesAsync(input, ct)), ct);
                var stderrFile = Path.Combine(outDir, "." + name + ".stderr");
                if (!result.Stderr.IsEmpty)
                {
                    // The task's stderr (at most 64 KiB), beside its output: a hidden file, so it is never taken for an output.
                    await File.WriteAllBytesAsync(stderrFile, result.Stderr.ToArray(), ct);
                }
                else
                {
                    File.Delete(stderrFile);
                }
                if (!result.Succeeded)
                {
                    throw new SubmissionException(result.Error ?? result.Status.ToString(), result.History);
                }
                var target = Path.Combine(outDir, name);
                var temporary = Path.Combine(outDir, "." + name + "." + Environment.ProcessId + ".tmp");
                await File.WriteAllBytesAsync(temporary, result.Output.ToArray(), ct);
                File.Move(temporary, target, overwrite: true);
                File.Delete(Path.Combine(outDir, "." + name + ".failed"));
                Interlocked.Increment(ref done);
                Interlocked.Add(ref cost, result.Cost);
                if (result.Verified)
                {
                    Interlocked.Increment(ref verified);
                }
                if (result.Unresolved is { } reason)
                {
                    lock (unresolved)
                    {
                        unresolved.Add((name, reason));
                    }
                }
            }
            catch (SubmissionException e)
            {
                Interlocked.Increment(ref failed);
                lock (failures)
                {
                    failures.Add($"{Path.GetFileName(input)}: {e.Message}");
                }
                await File.WriteAllTextAsync(Path.Combine(outDir, "." + Path.GetFileName(input) + ".failed"), e.Message + "\n", CancellationToken.None);
            }
            finally
            {
                Interlocked.Decrement(ref running);
                gate.Release();
            }
        }

        string Rate(out string eta)
        {
            var seconds = time.GetElapsedTime(started).TotalSeconds;
            var finished = Volatile.Read(ref done) + Volatile.Read(ref failed);
            var rate = seconds > 0 ? finished / seconds : 0;
            var left = pending.Count - finished;
            eta = rate > 0 ? HomeCommands.Duration(left / rate) : "?";
            return rate.ToString("0.0", CultureInfo.InvariantCulture);
        }

        string Unresolved()
        {
            lock (unresolved)
            {
                return unresolved.Count > 0 ? string.Create(CultureInfo.InvariantCulture, $"{unresolved.Count} unresolved, ") : "";
            }
        }

        var all = Task.WhenAll(pending.Select(RunOneAsync));
        var interactive = !Console.IsErrorRedirected && ReferenceEquals(error, Console.Error) && pending.Count > 0;
        if (interactive)
        {
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            await console.Progress()
                .AutoClear(false)
                // Rate and time left are in the description (Spectre's own remaining-time column guesses from the bar alone);
                // with them twice the line wrapped into two garbled rows on an 80-column terminal.
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn { Width = 10 }, new PercentageColumn())
                .StartAsync(async context =>
                {
                    var bar = context.AddTask("batch", maxValue: pending.Count);
                    while (!all.IsCompleted)
                    {
                        await Task.WhenAny(all, Task.Delay(TimeSpan.FromMilliseconds(250), time, CancellationToken.None));
                        bar.Value = Volatile.Read(ref done) + Volatile.Read(ref failed);
                        var rate = Rate(out var eta);
                        bar.Description = Markup.Escape($"{done}/{pending.Count} done, {running} running, {failed} failed, {verified} verified, {Unresolved()}{rate}/s, {eta} left");
                    }
                    bar.Value = pending.Count;
                });
        }
        else
        {
            var last = -1;
            while (!all.IsCompleted)
            {
                await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(2), time, CancellationToken.None));
                var finished = done + failed;
                if (finished != last && pending.Count > 0)
                {
                    last = finished;
                    var rate = Rate(out var eta);
                    await error.WriteLineAsync($"potluck submit: batch {finished}/{pending.Count} finished: done {done}, running {running}, failed {failed}, verified {verified}, {Unresolved()}{rate}/s, {eta} left");
                }
            }
        }
        await all;
        return new Summary(inputs.Count, skipped, done, failed, verified, cost, failures) { Unresolved = [.. unresolved.OrderBy(u => u.Input, StringComparer.Ordinal)] };
    }
}
