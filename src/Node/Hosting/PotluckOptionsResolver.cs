using System.Collections;
using System.Globalization;
using System.Reflection;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Options;
using Potluck.Protocol.Multiformats;

namespace Potluck.Node.Hosting;

/// <summary>
/// Binds <see cref="PotluckOptions"/> from configuration, applies the builder's adjustments and validates the result.
/// Every message names the setting as a key path (<c>compute:provider:cores</c>, which is also
/// <c>{"compute": {"provider": {"cores": …}}}</c> in <c>potluck.json</c> and <c>POTLUCK__COMPUTE__PROVIDER__CORES</c> in the
/// environment) and says what would be right. Unknown keys are errors: a typo must not pass silently.
/// </summary>
public static class PotluckOptionsResolver
{
    /// <summary>Binds, adjusts and validates; throws <see cref="OptionsValidationException"/> listing every problem.</summary>
    public static PotluckOptions Resolve(IConfiguration configuration, IReadOnlyList<Func<PotluckOptions, PotluckOptions>> configure)
    {
        var failures = new List<string>();
        CheckKeys(configuration, typeof(PotluckOptions), "", failures);
        PotluckOptions options = new();
        if (failures.Count == 0)
        {
            try
            {
                options = configuration.Get<PotluckOptions>() ?? new PotluckOptions();
            }
            catch (InvalidOperationException e)
            {
                failures.Add(DescribeBindingError(e));
            }
        }
        if (failures.Count > 0)
        {
            throw new OptionsValidationException(nameof(PotluckOptions), typeof(PotluckOptions), failures);
        }
        foreach (var step in configure)
        {
            options = step(options);
        }
        var problems = PotluckOptionsValidator.Validate(options);
        if (problems.Count > 0)
        {
            throw new OptionsValidationException(nameof(PotluckOptions), typeof(PotluckOptions), problems);
        }
        return options;
    }

    /// <summary>Reports keys that name no setting, with the closest one that does.</summary>
    private static void CheckKeys(IConfiguration section, Type type, string path, List<string> failures)
    {
        var properties = BindableProperties(type);
        foreach (var child in section.GetChildren())
        {
            var key = path.Length == 0 ? child.Key : $"{path}:{child.Key}";
            if (!properties.TryGetValue(child.Key, out var property))
            {
                var known = string.Join(", ", properties.Keys.Select(Camel).Order(StringComparer.Ordinal));
                var guess = properties.Keys.MinBy(k => Distance(k.ToLowerInvariant(), child.Key.ToLowerInvariant()));
                var hint = guess is not null && Distance(guess.ToLowerInvariant(), child.Key.ToLowerInvariant()) <= 2 ? $"did you mean '{Join(path, Camel(guess))}'? " : "";
                failures.Add($"'{key}' is not a setting: {hint}the settings here are {known}");
                continue;
            }
            var propertyType = Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType;
            if (IsLeaf(propertyType))
            {
                CheckValue(child, propertyType, key, failures);
                continue;
            }
            if (ElementType(propertyType) is { } element)
            {
                foreach (var item in child.GetChildren())
                {
                    var itemKey = $"{key}:{item.Key}";
                    if (IsLeaf(element))
                    {
                        CheckValue(item, element, itemKey, failures);
                    }
                    else
                    {
                        CheckKeys(item, element, itemKey, failures);
                    }
                }
                continue;
            }
            if (propertyType.IsGenericType && propertyType.GetGenericTypeDefinition() == typeof(Dictionary<,>))
            {
                continue;
            }
            CheckKeys(child, propertyType, key, failures);
        }
    }

    /// <summary>Converts a value as the binder will, and says what is wrong when it cannot (the binder drops bad list items silently).</summary>
    private static void CheckValue(IConfigurationSection section, Type type, string key, List<string> failures)
    {
        if (section.Value is not { } value)
        {
            if (section.GetChildren().Any())
            {
                failures.Add($"'{key}' must be a single value, not a section ({Expected(type.FullName ?? type.Name)})");
            }
            return;
        }
        if (type == typeof(string))
        {
            return;
        }
        try
        {
            var converter = System.ComponentModel.TypeDescriptor.GetConverter(type);
            if (converter.ConvertFromInvariantString(value) is null && type.IsValueType)
            {
                failures.Add($"'{key}' is '{value}', which is not {Expected(type.FullName!)}");
            }
        }
        catch (Exception e) when (e is FormatException or NotSupportedException or ArgumentException or OverflowException
                                      || e.InnerException is FormatException or OverflowException)
        {
            var detail = type == typeof(Multiaddr) ? $": {e.Message}" : "";
            failures.Add($"'{key}' is '{value}', which is not {Expected(type.FullName!)}{detail}");
        }
    }

    private static Dictionary<string, PropertyInfo> BindableProperties(Type type) =>
        type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.CanWrite && p.GetIndexParameters().Length == 0 && !typeof(Delegate).IsAssignableFrom(p.PropertyType)
                        && p.Name != "EqualityContract")
            .ToDictionary(p => p.Name, StringComparer.OrdinalIgnoreCase);

    private static bool IsLeaf(Type type) =>
        type.IsPrimitive || type.IsEnum || type == typeof(string) || type == typeof(decimal) || type == typeof(TimeSpan)
        || type == typeof(DateTimeOffset) || type == typeof(Multiaddr) || type == typeof(Uri);

    private static Type? ElementType(Type type)
    {
        if (type.IsArray)
        {
            return type.GetElementType();
        }
        if (type != typeof(string) && typeof(IEnumerable).IsAssignableFrom(type) && type.IsGenericType && type.GetGenericArguments().Length == 1)
        {
            return type.GetGenericArguments()[0];
        }
        return null;
    }

    private static string DescribeBindingError(InvalidOperationException e)
    {
        // "Failed to convert configuration value 'abc' at 'compute:provider:cores' to type 'System.Int32'."
        var message = e.Message;
        var at = message.IndexOf(" at '", StringComparison.Ordinal);
        var to = message.IndexOf("' to type '", StringComparison.Ordinal);
        if (at > 0 && to > at)
        {
            var key = message[(at + 5)..to];
            var typeName = message[(to + 11)..].TrimEnd('.', '\'');
            var valueStart = message.IndexOf('\'', StringComparison.Ordinal);
            var value = valueStart >= 0 && valueStart < at ? message[(valueStart + 1)..(at - 1)] : "?";
            var detail = e.InnerException?.InnerException?.Message ?? e.InnerException?.Message;
            return $"'{key}' is '{value}', which is not {Expected(typeName)}" + (detail is null || typeName.EndsWith("Multiaddr", StringComparison.Ordinal) is false ? "" : $": {detail}");
        }
        return message;
    }

    private static string Expected(string typeName) => typeName switch
    {
        "System.Int32" or "System.Int64" or "System.UInt64" or "System.UInt32" => "a whole number",
        "System.Double" or "System.Single" or "System.Decimal" => "a number",
        "System.Boolean" => "true or false",
        "System.TimeSpan" => "a duration such as 00:00:30 (hh:mm:ss)",
        _ when typeName.EndsWith("Multiaddr", StringComparison.Ordinal) => "a multiaddr such as /ip4/0.0.0.0/tcp/4100",
        _ => $"a {typeName}",
    };

    private static string Join(string path, string key) => path.Length == 0 ? key : $"{path}:{key}";

    internal static string Camel(string name) => name.Length == 0 ? name : char.ToLower(name[0], CultureInfo.InvariantCulture) + name[1..];

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
