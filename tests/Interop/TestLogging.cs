using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Potluck.Interop.Tests;

/// <summary>Potluck's logs in test output when POTLUCK_TEST_LOG names a level (e.g. debug); silent otherwise.</summary>
internal static class TestLogging
{
    public static ILoggerFactory Factory { get; } = Create();

    private static ILoggerFactory Create()
    {
        var level = Environment.GetEnvironmentVariable("POTLUCK_TEST_LOG");
        if (string.IsNullOrEmpty(level) || !Enum.TryParse<LogLevel>(level, true, out var min))
        {
            return NullLoggerFactory.Instance;
        }
        return LoggerFactory.Create(b => b.SetMinimumLevel(min).AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
        }));
    }
}
