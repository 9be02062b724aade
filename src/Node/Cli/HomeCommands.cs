using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Potluck.Node.Control;
using Potluck.Node.Hosting;

namespace Potluck.Node.Cli;

/// <summary>`potluck status`, `leases` and `config`: what an operator reads and changes on the node running on a data directory.</summary>
internal static class HomeCommands
{
    internal static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static Option<bool> JsonOption() => CliOptions.Flag("--json", "print the result as JSON (amounts in micro-credits)");

    public static Option<string> NodeDataDir() =>
        Commands.DataDirOption("the data directory of the running node (default $POTLUCK_DATA_DIR, else ~/.local/share/potluck)");

    public static Task WriteJsonAsync(TextWriter output, JsonNode? node) => output.WriteLineAsync(node?.ToJsonString(Indented) ?? "null");

    /// <summary>Credits (one credit is a million micro-credits, the ledger's unit) with six decimals.</summary>
    public static string Credits(long micro) => ComputeCommands.FormatCredits(micro);

    private static long Long(JsonNode? n) => n?.GetValue<long>() ?? 0;

    private static string Text(JsonNode? n) => n?.GetValue<string>() ?? "";

    public static string Duration(double seconds)
    {
        var t = TimeSpan.FromSeconds(seconds);
        return t.TotalMinutes < 1 ? $"{t.Seconds} s"
            : t.TotalHours < 1 ? $"{t.Minutes} min {t.Seconds} s"
            : t.TotalDays < 1 ? $"{(int)t.TotalHours} h {t.Minutes} min"
            : $"{(int)t.TotalDays} d {t.Hours} h";
    }

    /// <summary>The `potluck status` text from the status method's result.</summary>
    public static string FormatStatus(JsonObject s)
    {
        var text = new StringBuilder();
        void Line(string label, string value) => text.AppendLine($"{label,-14}{value}");
        Line("Peer ID:", Text(s["peer_id"]));
        var addresses = s["addresses"]!.AsArray().Select(a => a!.GetValue<string>()).ToArray();
        Line("Addresses:", addresses.Length == 0 ? "(none)" : addresses[0]);
        foreach (var a in addresses.Skip(1))
        {
            Line("", a);
        }
        Line("Uptime:", Duration(s["uptime_seconds"]!.GetValue<double>()));
        Line("Reachability:", Text(s["reachability"]));
        if (s["nat"] is JsonObject nat)
        {
            var rows = nat["addresses"]!.AsArray().OfType<JsonObject>().ToArray();
            Line("NAT:", $"{Text(nat["reachability"])} (AutoNAT v2)" + (rows.Length == 0 ? ": no address tested yet" : ""));
            foreach (var r in rows)
            {
                Line("", $"{Text(r["status"]),-8}{Text(r["address"])} ({Long(r["servers_reachable"])} servers reached it, {Long(r["servers_unreachable"])} could not)");
            }
            foreach (var r in nat["relays"]!.AsArray().OfType<JsonObject>())
            {
                Line("", $"relayed by {Text(r["relay"])} until {Text(r["expires"])}");
            }
            if (nat["serving_hop"]?.GetValue<bool>() == true)
            {
                Line("", "serving as a relay for others");
            }
        }
        Line("Peers:", $"{Long(s["peers"])} ({Long(s["connections"])} connections, {Long(s["inbound_connections"])} inbound; {Long(s["routing_table"])} in the DHT routing table)" +
                      (s["swarm_key"]?.GetValue<bool>() == true ? "; private network (swarm key)" : ""));
        if (s["provider"] is JsonObject p)
        {
            var price = Long(p["price_micro_credits_per_megafuel"]);
            Line("Offering:", $"{Long(p["cores"])} cores, {ByteSize.Format(Long(p["memory_bytes"]))} of memory, at {Credits(price)} credits per million fuel");
            if (p["disk_bytes_limit"] is not null)
            {
                var refused = Long(p["leases_refused_disk_full"]);
                Line("Disk:", $"{ByteSize.Format(Long(p["disk_bytes_used"]))} used of {ByteSize.Format(Long(p["disk_bytes_limit"]))} for others' modules " +
                              $"({Long(p["disk_files"])} files)" + (refused > 0 ? $"; {refused} leases refused: disk full" : ""));
            }
            var since = p["state_since"] is JsonValue v && DateTimeOffset.TryParse(v.GetValue<string>(), CultureInfo.InvariantCulture, DateTimeStyles.None, out var at)
                ? $" since {at.ToLocalTime():HH:mm:ss}" : "";
            Line("State:", $"{Text(p["state"])}{since}: {Text(p["reason"])}");
            Line("Leases:", $"{Long(p["leases_running"])} running ({Long(p["leases_held"])} held, {Long(p["cores_in_use"])} cores in use), " +
                            $"{Long(p["leases_completed"])} completed since start, {Long(p["leases_cancelled_for_owner"])} cancelled for the owner");
        }
        else
        {
            Line("Offering:", "nothing (not a provider)");
        }
        if (s["credits"] is JsonObject c)
        {
            Line("Balance:", $"{Credits(Long(c["balance"]))} credits ({Credits(Long(c["available"]))} available)");
            Line("Earned:", $"{Credits(Long(c["earned_last_hour"]))} credits in the last hour, {Credits(Long(c["earned_total"]))} in all ({Long(c["receipts_earned"])} receipts)");
            Line("Spent:", $"{Credits(Long(c["spent_last_hour"]))} credits in the last hour, {Credits(Long(c["spent_total"]))} in all ({Long(c["receipts_spent"])} receipts)");
            Line("Providers:", $"{Long(s["providers_known"])} known to this node as a requester");
        }
        if (s["why_no_work"] is JsonValue why)
        {
            Line("No work:", why.GetValue<string>());
        }
        return text.ToString();
    }

    /// <summary>`potluck status`.</summary>
    internal sealed class StatusCommand : PotluckCommand
    {
        public StatusCommand(CliContext context) : base("status", "Show the running node: peer id, addresses, uptime, reachability, peers, what it offers and " +
            "whether it is working, idle-paused or outside its hours, leases, credits earned and spent, and why no work arrives when none does.", context)
        {
            Options.Add(DataDir);
            Options.Add(Json);
        }

        public Option<string> DataDir { get; } = NodeDataDir();

        public Option<bool> Json { get; } = JsonOption();

        protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
        {
            await using var client = await ControlClient.ConnectAsync(result.GetValue(DataDir) ?? Context.DefaultDataDir(), null, ct);
            var status = await client.CallAsync(NodeControl.StatusMethod, null, ct) as JsonObject
                ?? throw new IOException("the node answered 'status' with no result");
            if (result.GetValue(Json))
            {
                await WriteJsonAsync(Out, status);
            }
            else
            {
                await Out.WriteAsync(FormatStatus(status));
            }
            return 0;
        }
    }

    /// <summary>`potluck leases`.</summary>
    internal sealed class LeasesCommand : PotluckCommand
    {
        public LeasesCommand(CliContext context) : base("leases", "List the leases the running node holds as a provider (requester, running or waiting, fuel, deadline).", context)
        {
            Options.Add(DataDir);
            Options.Add(Json);
        }

        public Option<string> DataDir { get; } = NodeDataDir();

        public Option<bool> Json { get; } = JsonOption();

        protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
        {
            await using var client = await ControlClient.ConnectAsync(result.GetValue(DataDir) ?? Context.DefaultDataDir(), null, ct);
            var leases = await client.CallAsync(NodeControl.LeasesMethod, null, ct) as JsonObject
                ?? throw new IOException("the node answered 'leases' with no result");
            if (result.GetValue(Json))
            {
                await WriteJsonAsync(Out, leases);
                return 0;
            }
            if (leases["providing"]?.GetValue<bool>() != true)
            {
                await Out.WriteLineAsync("This node does not provide (compute:provide = false): it holds no leases.");
                return 0;
            }
            var rows = leases["leases"]!.AsArray();
            if (rows.Count == 0)
            {
                await Out.WriteLineAsync("No leases held.");
                return 0;
            }
            await Out.WriteLineAsync($"{"REQUEST",-20}  {"REQUESTER",-52}  {"STATE",-8}  {"FUEL LIMIT",16}  DEADLINE (UTC)");
            foreach (var r in rows)
            {
                var deadline = DateTimeOffset.Parse(Text(r!["deadline"]), CultureInfo.InvariantCulture);
                await Out.WriteLineAsync($"{Text(r["request_id"]),-20}  {Text(r["requester"]),-52}  {(r["running"]!.GetValue<bool>() ? "running" : "waiting"),-8}  " +
                                         $"{Long(r["fuel_limit"]),16:N0}  {deadline.UtcDateTime:yyyy-MM-dd HH:mm:ss}");
            }
            await Out.WriteLineAsync($"{rows.Count} lease{(rows.Count == 1 ? "" : "s")}");
            return 0;
        }
    }

    /// <summary>`potluck config get|set|list`.</summary>
    internal sealed class ConfigCommand : Command
    {
        public ConfigCommand(CliContext context) : base("config", "Read and change the node's settings (potluck.json); a running node applies preferences, cores and memory at once.")
        {
            Subcommands.Add(new ListCommand(context));
            Subcommands.Add(new GetCommand(context));
            Subcommands.Add(new SetCommand(context));
        }

        /// <summary>Calls the running node, or works on the file when none runs.</summary>
        private static async Task<JsonObject> CallAsync(CliContext context, string dataDir, string? configFile, string method, JsonObject parameters, CancellationToken ct)
        {
            ControlClient? client = null;
            try
            {
                client = await ControlClient.ConnectAsync(dataDir, null, ct);
            }
            catch (NodeNotRunningException)
            {
            }
            if (client is not null)
            {
                await using (client)
                {
                    try
                    {
                        return await client.CallAsync(method, parameters, ct) as JsonObject ?? throw new IOException($"the node answered '{method}' with no result");
                    }
                    catch (NodeNotRunningException)
                    {
                        // control.json left by a node that crashed: work on the file.
                    }
                }
            }
            var settings = new NodeSettings(dataDir, configFile, []);
            try
            {
                return method switch
                {
                    NodeSettings.ListMethod => settings.List(parameters["all"]?.GetValue<bool>() == true),
                    NodeSettings.GetMethod => settings.Get(parameters["key"]!.GetValue<string>()),
                    _ => settings.Set(parameters["key"]!.GetValue<string>(), parameters["value"]!.GetValue<string>()),
                };
            }
            catch (Microsoft.Extensions.Options.OptionsValidationException e)
            {
                throw new ControlException(ControlErrorCode.BadRequest, "the configuration is not valid: " + string.Join("; ", e.Failures));
            }
        }

        /// <summary>The settings as JSON (--json) or as an aligned key/value table.</summary>
        private static Task WriteAsync(TextWriter output, JsonObject result, bool json) =>
            json ? WriteJsonAsync(output, result) : PrintAsync(output, result);

        private static async Task PrintAsync(TextWriter output, JsonObject result)
        {
            var rows = result["settings"]!.AsArray();
            var width = rows.Select(r => Text(r!["key"]).Length).DefaultIfEmpty(0).Max();
            foreach (var r in rows)
            {
                await output.WriteLineAsync($"{Text(r!["key"]).PadRight(width)}  {r["value"]?.GetValue<string>() ?? "(none)"}");
            }
        }

        private sealed class ListCommand : PotluckCommand
        {
            public ListCommand(CliContext context) : base("list", "List the settings an operator changes (with --all, every setting) and their values now.", context)
            {
                Options.Add(All);
                Options.Add(DataDir);
                Options.Add(Config);
                Options.Add(Json);
            }

            public Option<bool> All { get; } = CliOptions.Flag("--all", "every setting, protocol limits included");

            public Option<string> DataDir { get; } = NodeDataDir();

            public Option<string> Config { get; } = CliOptions.Path("--config", "file", "the node's configuration file when it is not <data dir>/potluck.json");

            public Option<bool> Json { get; } = JsonOption();

            protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
            {
                var answer = await CallAsync(Context, result.GetValue(DataDir) ?? Context.DefaultDataDir(), result.GetValue(Config), NodeSettings.ListMethod,
                    new JsonObject { ["all"] = result.GetValue(All) }, ct);
                await WriteAsync(Out, answer, result.GetValue(Json));
                return 0;
            }
        }

        private sealed class GetCommand : PotluckCommand
        {
            public GetCommand(CliContext context) : base("get", "Print a setting's value now (a section prints each of its settings).", context)
            {
                Arguments.Add(Key);
                Options.Add(DataDir);
                Options.Add(Config);
                Options.Add(Json);
            }

            public Argument<string> Key { get; } = new("key") { Description = "a key path, e.g. preferences:idleCpuPercent or compute:provider" };

            public Option<string> DataDir { get; } = NodeDataDir();

            public Option<string> Config { get; } = CliOptions.Path("--config", "file", "the node's configuration file when it is not <data dir>/potluck.json");

            public Option<bool> Json { get; } = JsonOption();

            protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
            {
                JsonObject answer;
                try
                {
                    answer = await CallAsync(Context, result.GetValue(DataDir) ?? Context.DefaultDataDir(), result.GetValue(Config), NodeSettings.GetMethod,
                        new JsonObject { ["key"] = result.GetValue(Key) }, ct);
                }
                catch (ControlException e) when (e.Code == ControlErrorCode.BadRequest)
                {
                    throw new UsageException(e.Message);
                }
                await WriteAsync(Out, answer, result.GetValue(Json));
                return 0;
            }
        }

        private sealed class SetCommand : PotluckCommand
        {
            public SetCommand(CliContext context) : base("set", "Change a setting in potluck.json after checking the whole configuration; a running node applies it at once where it can.", context)
            {
                Arguments.Add(Key);
                Arguments.Add(Value);
                Options.Add(DataDir);
                Options.Add(Config);
                Options.Add(Json);
            }

            public Argument<string> Key { get; } = new("key") { Description = "a key path, e.g. preferences:onlyWhenIdle or compute:provider:cores" };

            public Argument<string> Value { get; } = new("value") { Description = "the new value: a number, true/false, text, or JSON for a list ([\"a\",\"b\"])" };

            public Option<string> DataDir { get; } = NodeDataDir();

            public Option<string> Config { get; } = CliOptions.Path("--config", "file", "the node's configuration file when it is not <data dir>/potluck.json");

            public Option<bool> Json { get; } = JsonOption();

            protected override async Task<int> ExecuteAsync(ParseResult result, CancellationToken ct)
            {
                JsonObject answer;
                try
                {
                    answer = await CallAsync(Context, result.GetValue(DataDir) ?? Context.DefaultDataDir(), result.GetValue(Config), NodeSettings.SetMethod,
                        new JsonObject { ["key"] = result.GetValue(Key), ["value"] = result.GetValue(Value) }, ct);
                }
                catch (ControlException e) when (e.Code == ControlErrorCode.BadRequest)
                {
                    throw new UsageException(e.Message);
                }
                if (result.GetValue(Json))
                {
                    await WriteJsonAsync(Out, answer);
                    return 0;
                }
                await PrintAsync(Out, answer);
                await Out.WriteLineAsync($"{Text(answer["note"])} ({Text(answer["file"])})");
                return 0;
            }
        }
    }
}
