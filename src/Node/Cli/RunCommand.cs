using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Potluck.Node.Control;
using Potluck.Node.Hosting;
using Potluck.Protocol.Multiformats;

namespace Potluck.Node.Cli;

/// <summary>
/// `potluck run`: a long-running node. Its settings come from configuration (<see cref="NodeConfiguration"/>): the
/// home-node defaults, potluck.json in the data directory (or --config), POTLUCK__… environment variables, then these
/// flags, each of which is a configuration key (<see cref="RunFlags"/>), so what a flag sets can be set in the file too.
/// Ctrl-C and SIGTERM stop it cleanly through the generic host's console lifetime.
/// </summary>
internal sealed class RunCommand : PotluckCommand
{
    public RunCommand(CliContext context)
        : base("run", $"Run a node: listen on /ip4/0.0.0.0/tcp/{NodeConfiguration.DefaultPort}, find peers by mDNS and through --bootstrap, " +
            "remember them across restarts, and run tasks for others (a provider).", context)
    {
        Options.Add(Listen);
        Options.Add(Bootstrap);
        Options.Add(NoMdns);
        Options.Add(Cores);
        Options.Add(Price);
        Options.Add(NoProvide);
        Options.Add(SwarmKey);
        Options.Add(ControlListen);
        Options.Add(DataDir);
        Options.Add(Config);
        Options.Add(LogLevel);
        Options.Add(Json);
    }

    public Option<bool> Json { get; } = CliOptions.Flag("--json", "log one JSON object per line (time, level, category, message and its values) instead of text");

    public Option<Multiaddr[]> Listen { get; } = CliOptions.Addresses("--listen",
        $"address to listen on, repeatable (default /ip4/0.0.0.0/tcp/{NodeConfiguration.DefaultPort}; setting listen)", needPeerId: false);

    public Option<Multiaddr[]> Bootstrap { get; } = CliOptions.Addresses("--bootstrap",
        "a node to join through, …/p2p/<peer id>, repeatable; the DHT is bootstrapped through it (setting bootstrap)", needPeerId: true);

    public Option<bool> NoMdns { get; } = CliOptions.Flag("--no-mdns",
        "do not find peers on the local network by mDNS (setting discovery:mdns = false)");

    public Option<int?> Cores { get; } = CliOptions.Int("--cores", "n",
        "tasks run at once for others (default: preferences:cpuSharePercent of this machine's cores, 50 %, at least 1; setting compute:provider:cores)", 1, 4096);

    public Option<int?> Price { get; } = CliOptions.Int("--price", "micro-credits",
        "asked per million fuel, in micro-credits (a millionth of a credit; default 10; setting compute:provider:pricePerMegaFuel)", 0, 1_000_000_000);

    public Option<bool> NoProvide { get; } = CliOptions.Flag("--no-provide",
        "do not run tasks for others; the node still relays, discovers and gossips (setting compute:provide = false)");

    public Option<string> SwarmKey { get; } = Commands.SwarmKeyOption("join only the private network of this swarm.key (libp2p pnet; setting swarmKey)");

    public Option<string> ControlListen { get; } = CliOptions.Text("--control-listen", "address:port",
        "where the control API and /metrics listen, a loopback address (default 127.0.0.1:4101; setting control:listen)");

    public Option<string> DataDir { get; } = Commands.DataDirOption();

    public Option<string> Config { get; } = CliOptions.Path("--config", "file",
        $"read settings from this file instead of <data dir>/{NodeConfiguration.FileName} (flags still win)");

    public Option<LogLevel?> LogLevel { get; } = CliOptions.LogLevel(Microsoft.Extensions.Logging.LogLevel.Information);

    public override bool HandlesTermination => true;

    public override string? HelpNotes =>
        $"Settings: {NodeConfiguration.FileName} in the data directory (or --config), then POTLUCK__SECTION__KEY environment variables," + Environment.NewLine +
        "then these flags; each overrides the last. Keys are camelCase paths: --cores 2 is" + Environment.NewLine +
        "{\"compute\": {\"provider\": {\"cores\": 2}}} in the file and POTLUCK__COMPUTE__PROVIDER__CORES=2 in the environment.";

    /// <summary>
    /// The flags as configuration: scalar ones as keys (the same keys potluck.json and POTLUCK__… set, above both), and
    /// lists (--listen, --bootstrap) as an adjustment that replaces the configured list when given.
    /// </summary>
    internal static (List<KeyValuePair<string, string?>> Keys, Func<PotluckOptions, PotluckOptions> Lists) RunFlags(ParseResult result)
    {
        var run = (RunCommand)result.CommandResult.Command;
        var keys = new List<KeyValuePair<string, string?>>();
        if (result.GetValue(run.NoMdns))
        {
            keys.Add(new("discovery:mdns", "false"));
        }
        if (result.GetValue(run.NoProvide))
        {
            keys.Add(new("compute:provide", "false"));
        }
        if (result.GetValue(run.Cores) is { } cores)
        {
            keys.Add(new("compute:provider:cores", cores.ToString(CultureInfo.InvariantCulture)));
        }
        if (result.GetValue(run.Price) is { } price)
        {
            keys.Add(new("compute:provider:pricePerMegaFuel", price.ToString(CultureInfo.InvariantCulture)));
        }
        if (result.GetValue(run.ControlListen) is { } controlListen)
        {
            keys.Add(new("control:listen", controlListen));
        }
        if (result.GetValue(run.SwarmKey) is { } swarmKey)
        {
            keys.Add(new("swarmKey", swarmKey));
        }
        IReadOnlyList<Multiaddr>? listen = result.GetResult(run.Listen) is null ? null : result.GetValue(run.Listen);
        IReadOnlyList<Multiaddr>? bootstrap = result.GetResult(run.Bootstrap) is null ? null : result.GetValue(run.Bootstrap);
        return (keys, o => o with { Listen = listen ?? o.Listen, Bootstrap = bootstrap ?? o.Bootstrap });
    }

    /// <summary>The configuration: home-node defaults, potluck.json (or --config), POTLUCK__…, flags.</summary>
    /// <exception cref="NodeStartException">A file cannot be read or is not JSON, or there is no home directory.</exception>
    internal static (ConfigurationManager Configuration, Func<PotluckOptions, PotluckOptions> Lists, string DataDir) RunConfiguration(ParseResult result)
    {
        var run = (RunCommand)result.CommandResult.Command;
        var (keys, lists) = RunFlags(result);
        var dataDir = result.GetValue(run.DataDir) ?? run.Context.DefaultDataDir();
        var configuration = NodeConfiguration.Create(dataDir, NodeConfiguration.HomeNodeDefaults, keys, result.GetValue(run.Config));
        NodeConfiguration.ApplyDefaultCores(configuration);
        return (configuration, lists, dataDir);
    }

    /// <summary>The options `potluck run` would start with (for tests): throws as start would.</summary>
    internal static PotluckOptions ResolveRunOptions(ParseResult result)
    {
        var (configuration, lists, _) = RunConfiguration(result);
        return PotluckOptionsResolver.Resolve(configuration, [lists]);
    }

    protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
    {
        var (configuration, lists, dataDir) = RunConfiguration(result);
        var builder = PotluckNode.CreateBuilder(configuration).Configure(lists);
        builder.Logging.SetMinimumLevel(result.GetValue(LogLevel) ?? Microsoft.Extensions.Logging.LogLevel.Information);
        var underSystemd = Microsoft.Extensions.Hosting.Systemd.SystemdHelpers.IsSystemdService();
        if (result.GetValue(Json))
        {
            // One JSON object per line: timestamp, level, category, message and its named values.
            builder.Logging.AddJsonConsole(o =>
            {
                o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                o.UseUtcTimestamp = true;
            });
        }
        else if (!underSystemd)
        {
            builder.Logging.AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss ";
            });
        }
        builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = Microsoft.Extensions.Logging.LogLevel.Trace);
        builder.Logging.AddFilter("Microsoft.Hosting.Lifetime", Microsoft.Extensions.Logging.LogLevel.Warning);
        if (underSystemd)
        {
            // Type=notify: READY=1 once the node listens, STOPPING=1 on stop; log lines with journald's <level> prefixes.
            builder.Services.AddSystemd();
        }
        else
        {
            // Ctrl-C, SIGTERM and SIGQUIT ask the host to stop; it stops the node's services in reverse order (peers saved).
            builder.Services.AddSingleton<IHostLifetime, Microsoft.Extensions.Hosting.Internal.ConsoleLifetime>();
        }
        builder.Configure(o =>
        {
            var problems = PotluckOptionsValidator.ValidateForThisMachine(o);
            return problems.Count == 0 ? o : throw new OptionsValidationException(nameof(PotluckOptions), typeof(PotluckOptions), problems);
        });
        await using var node = builder.Build();
        var loggers = node.Services.GetRequiredService<ILoggerFactory>();
        ControlServer? control = null;
        try
        {
            // The identity first (a corrupt key is the first thing to fix), then the control API: if another node already
            // uses this data directory, stop before touching the network.
            var options = node.Options;
            _ = node.PeerId;
            control = new ControlServer(dataDir, new ControlOptions { Endpoint = options.Control.Endpoint! }, loggers);
            await control.StartAsync(CancellationToken.None);
            await node.StartAsync(CancellationToken.None);
        }
        catch (Exception e) when (Commands.StartFailure(e) is { } message)
        {
            if (control is not null)
            {
                await control.DisposeAsync();
            }
            await Error.WriteLineAsync($"potluck run: {message}");
            return 1;
        }
        await using var controlScope = control;
        var (flagKeys, _) = RunFlags(result);
        var settings = new NodeSettings(dataDir, result.GetValue(Config), flagKeys);
        NodeControl.Register(control, node, settings);
        settings.Register(control, node);
        SubmitControl.Register(control, node);
        using var metrics = new MetricsExporter(node);
        control.MapMetrics(metrics, node.Options.Control.OpenMetrics);
        using var printer = new NodePrinter(node, Out, control.Address!.ToString());
        await printer.PrintHeaderAsync();
        var lifetime = node.Services.GetRequiredService<IHostApplicationLifetime>();
        var stopping = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using (lifetime.ApplicationStopping.Register(() => stopping.TrySetResult()))
        using (ct.Register(lifetime.StopApplication))
        {
            await stopping.Task;
        }
        await node.StopAsync(CancellationToken.None);
        return 0;
    }
}
