using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Potluck.Tests;

/// <summary>
/// Potluck's logs in test output when POTLUCK_TEST_LOG names a level (e.g. debug); silent otherwise. With
/// POTLUCK_TEST_LOG_FILE as well they go to that file as they happen (for a test that hangs: the runner only shows a
/// test's output once it ends).
/// </summary>
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
        var file = Environment.GetEnvironmentVariable("POTLUCK_TEST_LOG_FILE");
        return LoggerFactory.Create(b =>
        {
            b.SetMinimumLevel(min);
            if (string.IsNullOrEmpty(file))
            {
                b.AddSimpleConsole(o =>
                {
                    o.SingleLine = true;
                    o.TimestampFormat = "HH:mm:ss.fff ";
                });
            }
            else
            {
                b.AddProvider(new FileLoggerProvider(file));
            }
        });
    }

    private sealed class FileLoggerProvider(string path) : ILoggerProvider
    {
        private readonly StreamWriter _writer = new(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };

        public ILogger CreateLogger(string categoryName) => new FileLogger(this, categoryName);

        public void Dispose() => _writer.Dispose();

        private sealed class FileLogger(FileLoggerProvider provider, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                var line = $"{DateTime.UtcNow:HH:mm:ss.fff} [{Environment.CurrentManagedThreadId}] {logLevel} {category}: {formatter(state, exception)}{(exception is null ? "" : " " + exception)}";
                lock (provider._writer)
                {
                    provider._writer.WriteLine(line);
                }
            }
        }
    }
}
