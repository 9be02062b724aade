using System.Reflection;

namespace Potluck.Tests;

/// <summary>Live callbacks registered on a token's source (the runtime's own bookkeeping, read by reflection: tests only).</summary>
internal static class Registrations
{
    private const BindingFlags Fields = BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public;

    public static int Live(CancellationToken token) =>
        Table(token) is { } table ? Count(table.GetType().GetField("Callbacks", Fields)!.GetValue(table)) : 0;

    /// <summary>
    /// Callback nodes the token's source holds: live ones and the free ones it keeps for reuse (.NET never gives those
    /// back while the source lives, so this is the peak count of registrations at once).
    /// </summary>
    public static int Nodes(CancellationToken token) =>
        Table(token) is { } table
            ? Count(table.GetType().GetField("Callbacks", Fields)!.GetValue(table))
                + Count(table.GetType().GetField("FreeNodeList", Fields)!.GetValue(table))
            : 0;

    /// <summary>The source's registrations table, or null when the token has no source or none registered yet.</summary>
    private static object? Table(CancellationToken token) =>
        typeof(CancellationToken).GetField("_source", Fields)!.GetValue(token) is { } source
            ? typeof(CancellationTokenSource).GetField("_registrations", Fields)!.GetValue(source)
            : null;

    private static int Count(object? node)
    {
        var count = 0;
        while (node is not null)
        {
            count++;
            node = node.GetType().GetField("Next", Fields)!.GetValue(node);
        }
        return count;
    }
}
