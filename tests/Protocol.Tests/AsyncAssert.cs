namespace Potluck.Protocol.Tests;

/// <summary>
/// Assertions that await instead of blocking. Inside a <see cref="Runtime.VirtualTimeDriver"/> run, NUnit's
/// <c>Assert.ThrowsAsync</c> would block the event loop's own thread while the code it waits for needs that loop.
/// </summary>
internal static class AsyncAssert
{
    /// <summary>Awaits <paramref name="code"/> and returns the <typeparamref name="T"/> (or subclass) it threw; fails otherwise.</summary>
    public static async Task<T> ThrowsAsync<T>(Func<Task> code) where T : Exception
    {
        try
        {
            await code();
        }
        catch (T e)
        {
            return e;
        }
        catch (Exception e)
        {
            Assert.Fail($"expected {typeof(T).Name}, got {e.GetType().Name}: {e.Message}");
        }
        Assert.Fail($"expected {typeof(T).Name}, nothing was thrown");
        return null!;
    }
}
