# escape=`
FROM mcr.microsoft.com/windows/servercore
RUN dir c:\
RUN echo b
