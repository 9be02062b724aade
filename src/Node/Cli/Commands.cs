using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Potluck.Node.Control;
using Potluck.Node.Hosting;
using Potluck.Protocol.Identity;
using Potluck.Protocol.Pnet;
using Potluck.Protocol.Transport;

namespace Potluck.Node.Cli;

/// <summary>
/// The `potluck` command line, on System.CommandLine. Exit codes: 0 ok, 1 failed (the message says why), 2 bad usage
/// (the message says what to fix). Every command documents its options with `--help`.
/// </summary>
public static class Commands
{
    /// <summary>Runs a command line; returns the exit code (0 ok, 1 failed, 2 bad usage).</summary>
    public static Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr) =>
        RunAsync(args, new CliContext(stdout, stderr, NodeConfiguration.DefaultDataDir));

    internal static async Task<int> RunAsync(string[] args, CliContext context)
    {
        var result = Parse(context, args);
        var command = result.CommandResult.Command;
        // --help and --version answer even when the rest of the line is wrong.
        if (result.Action is not (PotluckHelpAction or VersionAction))
        {
            var problems = CommandLine.Problems(result, args);
            if (problems.Count > 0)
            {
                foreach (var problem in problems)
                {
                    await context.Error.WriteLineAsync($"potluck: {problem}");
                }
                await context.Error.WriteLineAsync(CommandLine.HelpHint(command));
                return 2;
            }
        }
        var invocation = new InvocationConfiguration
        {
            Output = context.Out,
            Error = context.Error,
            EnableDefaultExceptionHandler = false, // failures are reported below, with a message and no stack trace
            ProcessTerminationTimeout = null,      // Ctrl-C is handled here (or by `run`'s host), not by the parser
        };
        using var termination = command is PotluckCommand { HandlesTermination: true } ? null : new TerminationSignal();
        var ct = termination?.Token ?? CancellationToken.None;
        var name = CommandLine.PathOf(command);
        try
        {
            return await result.InvokeAsync(invocation, ct);
        }
        catch (UsageException e)
        {
            await context.Error.WriteLineAsync($"potluck: {e.Message}");
            await context.Error.WriteLineAsync(CommandLine.HelpHint(command));
            return 2;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            await context.Error.WriteLineAsync($"{name}: cancelled");
            return 1;
        }
        catch (Exception e) when (Failure(e) is { } message)
        {
            await context.Error.WriteLineAsync($"{name}: {message}");
            return 1;
        }
        catch (Exception e)
        {
            await context.Error.WriteLineAsync($"{name}: unexpected error; this is a bug, please report it with what follows:{Environment.NewLine}{e}");
            return 1;
        }
    }

    /// <summary>Parses a command line without running it (for tests).</summary>
    internal static ParseResult Parse(params string[] args) =>
        Parse(new CliContext(TextWriter.Null, TextWriter.Null, NodeConfiguration.DefaultDataDir), args);

    internal static ParseResult Parse(CliContext context, IReadOnlyList<string> args) =>
        CreateRoot(context).Parse(P2pdCommand.Protect(args), new ParserConfiguration { ResponseFileTokenReplacer = null }); // "@file" is a file name, not a response file

    /// <summary>The `potluck` command and its subcommands.</summary>
    internal static Command CreateRoot(CliContext context)
    {
        var root = new Command("potluck", "share idle computers and run work on other people's machines, peer to peer.")
        {
            new RunCommand(context),
            new ComputeCommands.SubmitCommand(context),
            new HomeCommands.StatusCommand(context),
            new ComputeCommands.LedgerCommand(context),
            new PeersCommand(context),
            new HomeCommands.LeasesCommand(context),
            new HomeCommands.ConfigCommand(context),
            new IdCommand(context),
            new NetworkCommands.PingCommand(context),
            new NetworkCommands.PerfCommand(context),
            new HolePunchCommand(context),
            new SimCommand(context),
            new SwarmKeyCommand(context),
            new P2pdCommand(context),
            new TransportInteropCommand(context),
            new HelpCommand(context),
            new VersionCommand(context),
        };
        root.Options.Add(new HelpOption("--help", "-h") { Action = new PotluckHelpAction() });
        root.Options.Add(new VersionOption("--version") { Action = new VersionAction() });
        root.SetAction(r =>
        {
            r.InvocationConfiguration.Output.Write(Usage.Root(root));
            return 0;
        });
        return root;
    }

    /// <summary>The version every command reports: the agent version the node announces (Identify).</summary>
    internal static string Version => new Protocol.Identify.IdentifyOptions().AgentVersion;

    internal static Option<string> DataDirOption(string? description = null) => CliOptions.Path("--data-dir", "path",
        description ?? "where the identity key, potluck.json and node state live (default $POTLUCK_DATA_DIR, else ~/.local/share/potluck)");

    internal static Option<string> SwarmKeyOption(string description) => CliOptions.ExistingFile("--swarm-key", "file", description,
        path => $"--swarm-key: no file at '{path}'. Create one with 'potluck swarm-key generate > {path}'");

    /// <summary>Reads a swarm key named by --swarm-key; a bad file is a usage error.</summary>
    internal static SwarmKey? LoadSwarmKey(string? path)
    {
        if (path is null)
        {
            return null;
        }
        if (!File.Exists(path))
        {
            throw new UsageException($"--swarm-key: no file at '{path}'. Create one with 'potluck swarm-key generate > {path}'");
        }
        var info = new FileInfo(path);
        if (info.Length > 4096)
        {
            throw new UsageException($"--swarm-key: '{path}' is {info.Length} bytes; a swarm.key is under 100 bytes");
        }
        return SwarmKey.TryParse(File.ReadAllText(path), out var key, out var error)
            ? key
            : throw new UsageException($"--swarm-key: '{path}' is not a swarm key: {error}");
    }

    internal static ILoggerFactory CreateLoggers(LogLevel level) => LoggerFactory.Create(b => b
        .SetMinimumLevel(level)
        .AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss ";
        })
        .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace));

    /// <summary>The message for a node that could not start, or null when the failure is a bug (which then surfaces).</summary>
    internal static string? StartFailure(Exception e) => Failure(e) ?? (e is ArgumentException ? e.Message : null);

    /// <summary>The message for a failure of the environment (a file, a port, the network, a setting), or null for a bug.</summary>
    internal static string? Failure(Exception e) => e switch
    {
        OptionsValidationException v => "the configuration is not valid:" + string.Concat(v.Failures.Select(f => Environment.NewLine + "  " + f)),
        NodeStartException s => s.Message,
        TransportException { Error: TransportError.AddressInUse } t =>
            $"{t.Message}. Another program (or another potluck node) has that port: pick another, e.g. --listen /ip4/0.0.0.0/tcp/{NodeConfiguration.DefaultPort + 1}",
        SocketException { SocketErrorCode: SocketError.AddressAlreadyInUse } s =>
            $"{s.Message}. Another program (or another potluck node) has that port: pick another, e.g. --listen /ip4/0.0.0.0/tcp/{NodeConfiguration.DefaultPort + 1}",
        Scheduler.Credits.LedgerException l => $"the ledger cannot be opened: {l.Message}",
        ControlException or IOException or SocketException or UnauthorizedAccessException or InvalidDataException => e.Message,
        _ => null,
    };

    /// <summary>The `potluck peers` table: peer id, direction, address, latency, agent, protocol count.</summary>
    public static string FormatPeers(PeersResult result)
    {
        if (result.Peers.Count == 0)
        {
            return "No connected peers." + Environment.NewLine;
        }
        string[] header = ["PEER ID", "DIRECTION", "CONNS", "ADDRESS", "LATENCY", "AGENT", "PROTOCOLS"];
        var rows = result.Peers.Select(p => new[]
        {
            p.PeerId,
            p.Direction,
            p.Connections.ToString(System.Globalization.CultureInfo.InvariantCulture),
            p.Address,
            p.LatencyMs is { } ms ? $"{ms:0.###} ms" : "-",
            string.IsNullOrEmpty(p.Agent) ? "-" : Sanitize(p.Agent),
            p.Protocols.Count.ToString(System.Globalization.CultureInfo.InvariantCulture),
        }).ToList();
        var widths = header.Select((h, i) => Math.Max(h.Length, rows.Max(r => r[i].Length))).ToArray();
        var text = new System.Text.StringBuilder();
        foreach (var row in rows.Prepend(header))
        {
            text.AppendLine(string.Join("  ", row.Select((cell, i) => i == row.Length - 1 ? cell : cell.PadRight(widths[i]))).TrimEnd());
        }
        text.AppendLine($"{rows.Count} peer{(rows.Count == 1 ? "" : "s")}");
        return text.ToString();
    }

    /// <summary>A remote-chosen string fit for a terminal: no control characters, at most 40 characters.</summary>
    private static string Sanitize(string s)
    {
        var clean = new string(s.Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return clean.Length <= 40 ? clean : clean[..39] + "…";
    }

    /// <summary>`--help`: the overview for `potluck`, System.CommandLine's help (and any notes) for a command.</summary>
    private sealed class PotluckHelpAction : SynchronousCommandLineAction
    {
        private readonly HelpAction _default = new();

        public override bool ClearsParseErrors => true;

        public override int Invoke(ParseResult result)
        {
            var command = result.CommandResult.Command;
            var output = result.InvocationConfiguration.Output;
            if (!command.Parents.Any())
            {
                output.Write(Usage.Root(command));
                return 0;
            }
            _default.Invoke(result);
            if (command is PotluckCommand { HelpNotes: { } notes })
            {
                output.WriteLine(notes);
            }
            return 0;
        }
    }

    private sealed class VersionAction : SynchronousCommandLineAction
    {
        public override bool ClearsParseErrors => true;

        public override int Invoke(ParseResult result)
        {
            result.InvocationConfiguration.Output.WriteLine(Version);
            return 0;
        }
    }
}

/// <summary>`potluck id`: the node's peer id, creating its identity on first use.</summary>
internal sealed class IdCommand : PotluckCommand
{
    public IdCommand(CliContext context) : base("id", "Print this node's peer id (creating its identity key if there is none yet).", context)
    {
        Options.Add(DataDir);
        Options.Add(Cid);
        Options.Add(Json);
    }

    public Option<bool> Json { get; } = HomeCommands.JsonOption();

    public Option<string> DataDir { get; } = Commands.DataDirOption();

    public Option<bool> Cid { get; } = CliOptions.Flag("--cid", "print the peer id as a CIDv1 (bafz…) instead");

    protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
    {
        var dataDir = result.GetValue(DataDir) ?? Context.DefaultDataDir();
        var key = PrivateKey.LoadOrCreate(Path.Combine(dataDir, NodeConfiguration.IdentityFileName));
        if (result.GetValue(Json))
        {
            await HomeCommands.WriteJsonAsync(Out, new System.Text.Json.Nodes.JsonObject { ["peer_id"] = key.PeerId.ToString(), ["cid"] = key.PeerId.ToCidString() });
            return 0;
        }
        await Out.WriteLineAsync(result.GetValue(Cid) ? key.PeerId.ToCidString() : key.PeerId.ToString());
        return 0;
    }
}

/// <summary>`potluck peers`: the running node's connections, over its control socket.</summary>
internal sealed class PeersCommand : PotluckCommand
{
    public PeersCommand(CliContext context) : base("peers", "List the connected peers of the node running on this data directory.", context)
    {
        Options.Add(DataDir);
        Options.Add(NoPing);
        Options.Add(Json);
    }

    public Option<bool> Json { get; } = HomeCommands.JsonOption();

    public Option<string> DataDir { get; } = Commands.DataDirOption("the data directory of the running node (default $POTLUCK_DATA_DIR, else ~/.local/share/potluck)");

    public Option<bool> NoPing { get; } = CliOptions.Flag("--no-ping", "show the latency last measured instead of pinging each peer now");

    protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
    {
        var dataDir = result.GetValue(DataDir) ?? Context.DefaultDataDir();
        await using var client = await ControlClient.ConnectAsync(dataDir, null, ct);
        var parameters = new System.Text.Json.Nodes.JsonObject { ["ping"] = !result.GetValue(NoPing) };
        if (result.GetValue(Json))
        {
            await HomeCommands.WriteJsonAsync(Out, await client.CallAsync(NodeControl.PeersMethod, parameters, ct));
            return 0;
        }
        var peers = await client.CallAsync(NodeControl.PeersMethod, parameters, ControlJson.Default.PeersResult, ct);
        await Out.WriteAsync(Commands.FormatPeers(peers));
        return 0;
    }
}

/// <summary>`potluck swarm-key generate`: a new pre-shared key for a private cluster.</summary>
internal sealed class SwarmKeyCommand : Command
{
    public SwarmKeyCommand(CliContext context) : base("swarm-key", "Make keys for private clusters (libp2p pnet).")
    {
        Subcommands.Add(new GenerateCommand(context));
    }

    private sealed class GenerateCommand : PotluckCommand
    {
        public GenerateCommand(CliContext context)
            : base("generate", "Make a new swarm.key: potluck swarm-key generate --out swarm.key (or > swarm.key), then copy it to every machine of the cluster.", context)
        {
            Options.Add(Output);
            Options.Add(Json);
        }

        public Option<bool> Json { get; } = CliOptions.Flag("--json", "print the result as JSON: {\"swarm_key\": <the file's text>}, or with --out {\"written\": <path>}");

        public Option<string> Output { get; } = CliOptions.Path("--out", "file",
            "write the key to this new file, readable by its owner only (an existing file is never overwritten); default: print it");

        protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
        {
            var text = SwarmKey.Generate().ToFileText();
            if (result.GetValue(Output) is not { } path)
            {
                if (result.GetValue(Json))
                {
                    await HomeCommands.WriteJsonAsync(Out, new System.Text.Json.Nodes.JsonObject { ["swarm_key"] = text });
                    return 0;
                }
                await Out.WriteAsync(text);
                return 0;
            }
            if (File.Exists(path))
            {
                throw new IOException($"--out: '{path}' already exists; a swarm key is never overwritten (remove it first, or choose another file)");
            }
            var directory = Path.GetDirectoryName(path);
            if (directory is not null && !Directory.Exists(directory))
            {
                throw new IOException($"--out: the directory '{directory}' does not exist");
            }
            Protocol.Runtime.OwnerOnly.WriteNewFile(path, System.Text.Encoding.ASCII.GetBytes(text));
            if (result.GetValue(Json))
            {
                await HomeCommands.WriteJsonAsync(Out, new System.Text.Json.Nodes.JsonObject { ["written"] = Path.GetFullPath(path) });
            }
            await Error.WriteLineAsync($"wrote {path} (owner-only); copy it to every machine of the cluster and start each node with --swarm-key {path}");
            return 0;
        }
    }
}

/// <summary>`potluck help [command]`: the same as `potluck [command] --help`.</summary>
internal sealed class HelpCommand : PotluckCommand
{
    public HelpCommand(CliContext context) : base("help", "Show the overview, or a command's options (the same as potluck <command> --help).", context)
    {
        Arguments.Add(Topic);
    }

    public Argument<string[]> Topic { get; } = new("command")
    {
        Description = "the command to explain",
        Arity = ArgumentArity.ZeroOrMore,
    };

    protected override Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
    {
        var root = result.RootCommandResult.Command;
        var path = result.GetValue(Topic) ?? [];
        var command = root;
        foreach (var name in path)
        {
            command = command.Subcommands.FirstOrDefault(c => c.Name == name)
                ?? throw new UsageException($"unknown command '{name}'.{CommandLine.Suggest(name, command.Subcommands.Select(c => c.Name))} " +
                    $"Commands: {string.Join(", ", command.Subcommands.Select(c => c.Name))}.");
        }
        return root.Parse([.. path, "--help"]).InvokeAsync(result.InvocationConfiguration, ct);
    }
}

/// <summary>`potluck version`: the same as `potluck --version`.</summary>
internal sealed class VersionCommand : PotluckCommand
{
    public VersionCommand(CliContext context) : base("version", "Print the version (the same as potluck --version).", context) => Options.Add(Json);

    public Option<bool> Json { get; } = HomeCommands.JsonOption();

    protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
    {
        if (result.GetValue(Json))
        {
            await HomeCommands.WriteJsonAsync(Out, new System.Text.Json.Nodes.JsonObject { ["version"] = Commands.Version });
            return 0;
        }
        await Out.WriteLineAsync(Commands.Version);
        return 0;
    }
}
