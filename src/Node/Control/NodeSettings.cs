using System.Collections;
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;
using Potluck.Node.Hosting;
using Potluck.Protocol.Multiformats;

namespace Potluck.Node.Control;

/// <summary>
/// `potluck config`: the settings of a node as key paths (<c>preferences:idleCpuPercent</c>), read from its effective
/// options, and changed in its <c>potluck.json</c> after the whole configuration with the change is validated as a start
/// would validate it. A running node applies what it can at once (preferences, cores, memory, disk) and says what waits for a
/// restart. Used by the daemon (<see cref="Register"/>) and, with no node running, by the CLI on the file alone.
/// </summary>
public sealed class NodeSettings(string dataDir, string? configFile, IReadOnlyList<KeyValuePair<string, string?>> flags)
{
    public const string GetMethod = "config.get";
    public const string SetMethod = "config.set";
    public const string ListMethod = "config.list";

    /// <summary>The keys `config list` shows unless asked for all.</summary>
    private static readonly string[] OperatorKeys = ["listen", "bootstrap", "swarmKey", "discovery:mdns", "compute:provide", "compute:provider:cores",
        "compute:provider:memoryBytes", "compute:provider:diskBytes", "compute:provider:pricePerMegaFuel", "compute:provider:maxFuel", "control:listen", "preferences"];

    private readonly Lock _gate = new();
    private PotluckNode? _node;

    /// <summary>The file changed by <c>set</c>: --config, else potluck.json in the data directory.</summary>
    public string FilePath { get; } = configFile is null ? Path.Combine(Path.GetFullPath(dataDir), NodeConfiguration.FileName) : Path.GetFullPath(configFile);

    public void Register(ControlServer server, PotluckNode? node = null)
    {
        _node = node;
        server.Register(ListMethod, (p, _) => ValueTask.FromResult<JsonNode?>(List(p.TryGetProperty("all", out var a) && a.ValueKind == JsonValueKind.True)));
        server.Register(GetMethod, (p, _) => ValueTask.FromResult<JsonNode?>(Get(String(p, "key"))));
        server.Register(SetMethod, (p, _) => ValueTask.FromResult<JsonNode?>(Set(String(p, "key"), String(p, "value"))));
    }

    private static string String(JsonElement p, string name) =>
        p.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && v.GetString() is { Length: > 0 and <= 4096 } s
            ? s
            : throw new ControlException(ControlErrorCode.BadRequest, $"\"{name}\" must be a string of 1 to 4096 characters");

    /// <summary>The node's configuration with <paramref name="file"/> (default: the real one), with or without the run's flags.</summary>
    private ConfigurationManager Configure(string? file, bool withFlags = true)
    {
        var c = NodeConfiguration.Create(dataDir, NodeConfiguration.HomeNodeDefaults, withFlags ? flags : [], file ?? configFile);
        NodeConfiguration.ApplyDefaultCores(c);
        return c;
    }

    private PotluckOptions Effective()
    {
        if (_node is { } node)
        {
            var live = node.Options;
            if (node.Compute is { } compute)
            {
                // What `config set` changed while the node runs: the offer and the disk limit as they are now.
                var provider = live.Compute.Provider with { DiskBytes = compute.Disk.LimitBytes };
                if (compute.Provider is { } running)
                {
                    provider = provider with { Cores = running.Capacity.Cores, MemoryBytes = running.Capacity.MemoryBytes };
                }
                live = live with { Compute = live.Compute with { Provider = provider } };
            }
            return node.Preferences is { } p ? live with { Preferences = p.Preferences } : live;
        }
        return Resolve(Configure(null));
    }

    private static PotluckOptions Resolve(IConfiguration configuration)
    {
        var options = PotluckOptionsResolver.Resolve(configuration, []);
        var problems = PotluckOptionsValidator.ValidateForThisMachine(options);
        return problems.Count == 0 ? options : throw new OptionsValidationException(nameof(PotluckOptions), typeof(PotluckOptions), problems);
    }

    /// <summary>Every setting and its value now (operator-facing ones unless <paramref name="all"/>).</summary>
    public JsonObject List(bool all)
    {
        var values = Flatten(Effective());
        var rows = new JsonArray();
        foreach (var (key, value) in values)
        {
            if (all || OperatorKeys.Any(k => key == k || key.StartsWith(k + ":", StringComparison.Ordinal)))
            {
                rows.Add(new JsonObject { ["key"] = key, ["value"] = value });
            }
        }
        return new JsonObject { ["file"] = FilePath, ["settings"] = rows };
    }

    /// <summary>One setting's value now; a key that names a section lists its settings.</summary>
    public JsonObject Get(string key)
    {
        var values = Flatten(Effective());
        var matches = values.Where(kv => string.Equals(kv.Key, key, StringComparison.OrdinalIgnoreCase)
                                         || kv.Key.StartsWith(key + ":", StringComparison.OrdinalIgnoreCase)).ToArray();
        if (matches.Length == 0)
        {
            throw new ControlException(ControlErrorCode.BadRequest, $"'{key}' is not a setting{Suggest(key, values.Select(kv => kv.Key))}; 'potluck config list --all' shows them all");
        }
        var rows = new JsonArray(matches.Select(kv => (JsonNode)new JsonObject { ["key"] = kv.Key, ["value"] = kv.Value }).ToArray());
        return new JsonObject { ["file"] = FilePath, ["settings"] = rows };
    }

    private static string Suggest(string key, IEnumerable<string> keys)
    {
        var best = keys.MinBy(k => Distance(k.ToLowerInvariant(), key.ToLowerInvariant()));
        return best is not null && Distance(best.ToLowerInvariant(), key.ToLowerInvariant()) <= 3 ? $" (did you mean '{best}'?)" : "";
    }

    /// <summary>Validates the configuration with <paramref name="key"/> = <paramref name="value"/>, writes the file, applies it live where possible.</summary>
    public JsonObject Set(string key, string value)
    {
        lock (_gate)
        {
            var root = ReadFile();
            var path = key.Split(':', StringSplitOptions.RemoveEmptyEntries);
            if (path.Length == 0 || path.Any(p => p.Length > 128))
            {
                throw new ControlException(ControlErrorCode.BadRequest, $"'{key}' is not a key path such as preferences:idleCpuPercent");
            }
            var keyPath = string.Join(':', path.Select(PotluckOptionsResolver.Camel));
            if (keyPath is "dataDir")
            {
                throw new ControlException(ControlErrorCode.BadRequest, "'dataDir' is not kept in potluck.json (it holds potluck.json): use --data-dir or POTLUCK_DATA_DIR");
            }
            SetPath(root, path, ParseValue(value));
            var candidate = FilePath + ".candidate." + Environment.ProcessId;
            PotluckOptions options;
            try
            {
                ControlFiles.WriteOwnerOnly(candidate, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
                var configuration = Configure(candidate);
                try
                {
                    Resolve(Configure(candidate, withFlags: false));
                    options = Resolve(configuration);
                }
                catch (OptionsValidationException e)
                {
                    throw new ControlException(ControlErrorCode.BadRequest, "not changed: " + string.Join("; ", e.Failures));
                }
                catch (NodeStartException e)
                {
                    throw new ControlException(ControlErrorCode.BadRequest, "not changed: " + e.Message);
                }
                var effective = Flatten(options);
                var shown = effective.Where(kv => string.Equals(kv.Key, keyPath, StringComparison.OrdinalIgnoreCase) || kv.Key.StartsWith(keyPath + ":", StringComparison.OrdinalIgnoreCase)).ToArray();
                if (shown.Length == 0)
                {
                    throw new ControlException(ControlErrorCode.BadRequest, $"'{keyPath}' is not a setting{Suggest(keyPath, effective.Select(kv => kv.Key))}");
                }
                File.Move(candidate, FilePath, overwrite: true);
                var (applied, note) = ApplyLive(keyPath, options);
                var envName = NodeConfiguration.EnvironmentPrefix + keyPath.Replace(":", "__", StringComparison.Ordinal).ToUpperInvariant();
                if (Environment.GetEnvironmentVariable(envName) is not null)
                {
                    note += $" Note: {envName} is set in the environment and wins over the file.";
                }
                if (flags.Any(f => string.Equals(f.Key, keyPath, StringComparison.OrdinalIgnoreCase)))
                {
                    note += " Note: a flag of `potluck run` sets it for this run and wins over the file.";
                }
                return new JsonObject
                {
                    ["file"] = FilePath,
                    ["key"] = keyPath,
                    ["settings"] = new JsonArray(shown.Select(kv => (JsonNode)new JsonObject { ["key"] = kv.Key, ["value"] = kv.Value }).ToArray()),
                    ["applied"] = applied,
                    ["note"] = note.Trim(),
                };
            }
            finally
            {
                File.Delete(candidate);
            }
        }
    }

    private (string Applied, string Note) ApplyLive(string key, PotluckOptions options)
    {
        if (_node is not { } node)
        {
            return ("saved", "No node is running on this data directory: it applies when the node starts.");
        }
        if (key.StartsWith("preferences", StringComparison.OrdinalIgnoreCase) && node.Preferences is { } prefs)
        {
            prefs.Apply(options.Preferences);
            return ("live", $"Applied now: {prefs.Current.Reason}.");
        }
        if (key is "compute:provider:diskBytes" && node.Compute is { } compute)
        {
            var disk = compute.Disk;
            disk.SetLimit(options.Compute.Provider.DiskBytes);
            return ("live", $"Applied now: keeping at most {disk.LimitBytes} bytes on disk for others ({disk.UsedBytes} used; files of leases in progress go when they end).");
        }
        if (key is "compute:provider:cores" or "compute:provider:memoryBytes" or "compute:provider" && node.Compute?.Provider is { } provider)
        {
            node.Compute!.Disk.SetLimit(options.Compute.Provider.DiskBytes);
            provider.Resize(options.Compute.Provider.Cores, options.Compute.Provider.MemoryBytes);
            return ("live", $"Applied now: offering {options.Compute.Provider.Cores} cores and {options.Compute.Provider.MemoryBytes} bytes of memory (leases running keep theirs).");
        }
        return ("restart", "Saved; it takes effect when the node is restarted.");
    }

    private JsonObject ReadFile()
    {
        if (!File.Exists(FilePath))
        {
            return new JsonObject();
        }
        try
        {
            var info = new FileInfo(FilePath);
            if (info.Length > NodeConfiguration.MaxFileBytes)
            {
                throw new ControlException(ControlErrorCode.BadRequest, $"{FilePath} is {info.Length} bytes; a configuration file is at most {NodeConfiguration.MaxFileBytes} bytes");
            }
            return JsonNode.Parse(File.ReadAllText(FilePath), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }) as JsonObject
                ?? throw new ControlException(ControlErrorCode.BadRequest, $"{FilePath} is not a JSON object; fix or delete it");
        }
        catch (JsonException e)
        {
            throw new ControlException(ControlErrorCode.BadRequest, $"{FilePath} is not valid JSON ({e.Message}); fix or delete it");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ControlException(ControlErrorCode.BadRequest, $"cannot read {FilePath}: {e.Message}");
        }
    }

    private static JsonNode? ParseValue(string value)
    {
        var t = value.Trim();
        if (t.StartsWith('[') || t.StartsWith('{'))
        {
            try
            {
                return JsonNode.Parse(t, documentOptions: new JsonDocumentOptions { MaxDepth = 16 });
            }
            catch (JsonException e)
            {
                throw new ControlException(ControlErrorCode.BadRequest, $"'{Short(value)}' starts like JSON but is not: {e.Message}");
            }
        }
        if (t is "true" or "false")
        {
            return JsonValue.Create(t == "true");
        }
        if (long.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l))
        {
            return JsonValue.Create(l);
        }
        if (double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && double.IsFinite(d))
        {
            return JsonValue.Create(d);
        }
        return JsonValue.Create(value);
    }

    private static string Short(string s) => s.Length <= 40 ? s : s[..40] + "…";

    private static void SetPath(JsonObject root, string[] path, JsonNode? value)
    {
        JsonNode node = root;
        for (var i = 0; i < path.Length - 1; i++)
        {
            var segment = PotluckOptionsResolver.Camel(path[i]);
            var existing = FindKey(node, segment);
            JsonNode? child = node is JsonObject o ? (existing is null ? null : o[existing]) : null;
            if (child is null)
            {
                if (node is not JsonObject parent)
                {
                    throw new ControlException(ControlErrorCode.BadRequest, $"'{string.Join(':', path.Take(i + 1))}' is a value, not a section");
                }
                child = new JsonObject();
                parent[segment] = child;
            }
            node = child;
        }
        var last = PotluckOptionsResolver.Camel(path[^1]);
        switch (node)
        {
            case JsonObject obj:
                obj.Remove(FindKey(obj, last) ?? last);
                obj[last] = value;
                break;
            case JsonArray array when int.TryParse(last, NumberStyles.None, CultureInfo.InvariantCulture, out var index) && index <= array.Count && index < 1024:
                if (index == array.Count)
                {
                    array.Add(value);
                }
                else
                {
                    array[index] = value;
                }
                break;
            default:
                throw new ControlException(ControlErrorCode.BadRequest, $"cannot set '{string.Join(':', path)}'");
        }
    }

    private static string? FindKey(JsonNode node, string name) =>
        node is JsonObject o ? o.Select(kv => kv.Key).FirstOrDefault(k => string.Equals(k, name, StringComparison.OrdinalIgnoreCase)) : null;

    /// <summary>Every leaf of the options as key path → text, in declaration order.</summary>
    public static List<KeyValuePair<string, string?>> Flatten(PotluckOptions options)
    {
        var list = new List<KeyValuePair<string, string?>>();
        Walk(options, "", list, 0);
        return list;
    }

    private static void Walk(object? value, string path, List<KeyValuePair<string, string?>> into, int depth)
    {
        if (depth > 8)
        {
            return;
        }
        if (value is null)
        {
            into.Add(new(path, null));
            return;
        }
        var type = value.GetType();
        var ours = type.Namespace?.StartsWith("Potluck", StringComparison.Ordinal) == true && type != typeof(Multiaddr);
        if (type.IsPrimitive || type.IsEnum || value is string or decimal or TimeSpan or DateTimeOffset or Multiaddr or Uri
            || (!ours && value is not IEnumerable))
        {
            into.Add(new(path, value switch
            {
                bool b => b ? "true" : "false",
                IFormattable f when !type.IsEnum => f.ToString(null, CultureInfo.InvariantCulture),
                Enum e => PotluckOptionsResolver.Camel(e.ToString()),
                _ => value.ToString(),
            }));
            return;
        }
        if (value is IEnumerable items and not IDictionary)
        {
            var i = 0;
            foreach (var item in items)
            {
                Walk(item, $"{path}:{i++}", into, depth + 1);
            }
            if (i == 0)
            {
                into.Add(new(path, "[]"));
            }
            return;
        }
        if (value is IDictionary)
        {
            return;
        }
        foreach (var p in type.GetProperties(BindingFlags.Public | BindingFlags.Instance))
        {
            if (!p.CanWrite || p.GetIndexParameters().Length > 0 || p.Name == "EqualityContract" || typeof(Delegate).IsAssignableFrom(p.PropertyType)
                || p.Name == nameof(PotluckOptions.DataDir))
            {
                continue;
            }
            var key = path.Length == 0 ? PotluckOptionsResolver.Camel(p.Name) : $"{path}:{PotluckOptionsResolver.Camel(p.Name)}";
            object? child;
            try
            {
                child = p.GetValue(value);
            }
            catch (TargetInvocationException)
            {
                continue;
            }
            Walk(child, key, into, depth + 1);
        }
    }

    private static int Distance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (var i = 0; i <= a.Length; i++)
        {
            d[i, 0] = i;
        }
        for (var j = 0; j <= b.Length; j++)
        {
            d[0, j] = j;
        }
        for (var i = 1; i <= a.Length; i++)
        {
            for (var j = 1; j <= b.Length; j++)
            {
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            }
        }
        return d[a.Length, b.Length];
    }
}
